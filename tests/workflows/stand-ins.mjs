// Stand-ins for the vendors' APIs the workflows call, answering as their documentation says
// (see ../shared/REFERENCE.md §2b): HubSpot's search (paging.next.after, about 5 requests a second,
// 429 with Retry-After), associations v4 and companies batch read; Zoho CRM v6 (per_page ≤ 200,
// `page` only up to 2,000 records, then 400 DISCRETE_PAGINATION_LIMIT_EXCEEDED; page_token; 204
// with no body when If-Modified-Since finds nothing); Zoho Desk (`tickets` counts `from` from 1,
// `tickets/search` from 0); Jira Cloud search/jql (nextPageToken, isLast); Salesforce SOQL query
// (2,000 a page, nextRecordsUrl, done). One loopback server answers for every vendor; a test
// fills `source` and arms faults.

import { createServer } from 'node:http';

const json = (res, status, body, headers = {}) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
};

/** Records of `list` modified at or after `since` (ms), oldest first. */
const changedSince = (list, since) =>
  list.filter((r) => since === null || r.modified >= since).sort((a, b) => a.modified - b.modified);

export async function startStandIns() {
  const state = {
    // Per collection ('hubspot:deals', 'zoho_crm:Contacts', 'zoho_desk:tickets', 'jira:issues',
    // 'salesforce:Opportunity'): [{ modified: ms, record }]; hubspot companies by id; deal → company.
    source: {},
    companies: new Map(),
    dealCompany: new Map(),
    // Faults: a function (collection, pageIndex, request) returning a response to give instead.
    fault: null,
    // HubSpot's rate limit: at most this many search requests in any second.
    hubspotPerSecond: 5,
    hubspotCalls: [],
    rejected: 0,
    requests: [],
  };
  const page = (collection, list, offset, size, req, res) => {
    const index = Math.floor(offset / size);
    const forced = state.fault?.(collection, index, req);
    if (forced) {
      json(res, forced.status, forced.body ?? {}, forced.headers);
      return null;
    }
    return list.slice(offset, offset + size);
  };

  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : null;
    const url = new URL(req.url, 'http://stand-in');
    const q = url.searchParams;
    state.requests.push({ method: req.method, path: url.pathname, query: Object.fromEntries(q), body, at: Date.now() });
    if (!(req.headers.authorization ?? '').startsWith('Bearer ')) return json(res, 401, { message: 'no token' });
    let m;

    // ── HubSpot ──
    if ((m = url.pathname.match(/^\/hubspot\/crm\/v3\/objects\/(contacts|deals)\/search$/))) {
      const now = Date.now();
      state.hubspotCalls = state.hubspotCalls.filter((t) => now - t < 1000);
      if (state.hubspotCalls.length >= state.hubspotPerSecond) {
        state.rejected += 1;
        return json(res, 429, { status: 'error', message: 'You have reached your secondly limit.', errorType: 'RATE_LIMIT', policyName: 'SECONDLY' }, { 'retry-after': '1' });
      }
      state.hubspotCalls.push(now);
      const filter = body.filterGroups?.[0]?.filters?.[0];
      const list = changedSince(state.source[`hubspot:${m[1]}`] ?? [], filter ? Number(filter.value) : null);
      const offset = Number(body.after ?? 0);
      if (offset >= 10000) {
        return json(res, 400, { status: 'error', message: 'There was a problem with the request.', category: 'VALIDATION_ERROR', context: { after: ['at most 10000 results'] } });
      }
      const results = page(`hubspot:${m[1]}`, list, offset, body.limit, req, res);
      if (!results) return;
      const next = offset + body.limit < list.length ? { next: { after: String(offset + body.limit) } } : undefined;
      return json(res, 200, { total: list.length, results: results.map((r) => r.record), ...(next ? { paging: next } : {}) });
    }
    if (url.pathname === '/hubspot/crm/v4/associations/deals/companies/batch/read') {
      if (!body.inputs?.length || body.inputs.length > 1000) return json(res, 400, { message: 'inputs: 1 to 1000' });
      const forced = state.fault?.('hubspot:associations', 0, req);
      if (forced) return json(res, forced.status, forced.body ?? {}, forced.headers);
      return json(res, 200, {
        status: 'COMPLETE',
        results: body.inputs
          .filter((i) => state.dealCompany.has(i.id))
          .map((i) => ({ from: { id: i.id }, to: [{ toObjectId: Number(state.dealCompany.get(i.id)), associationTypes: [] }] })),
      });
    }
    if (url.pathname === '/hubspot/crm/v3/objects/companies/batch/read') {
      if (body.inputs.length > 100) return json(res, 400, { message: 'at most 100 inputs' });
      return json(res, 200, {
        status: 'COMPLETE',
        results: body.inputs.filter((i) => state.companies.has(i.id)).map((i) => ({ id: i.id, properties: state.companies.get(i.id) })),
      });
    }

    // ── Zoho CRM ──
    if ((m = url.pathname.match(/^\/zoho_crm\/crm\/v6\/(Contacts|Deals)$/))) {
      const perPage = Number(q.get('per_page') ?? 200);
      if (perPage > 200) return json(res, 400, { code: 'INVALID_DATA', message: 'per_page is at most 200' });
      const since = req.headers['if-modified-since'] ? Date.parse(req.headers['if-modified-since']) : null;
      const list = changedSince(state.source[`zoho_crm:${m[1]}`] ?? [], since);
      let offset;
      if (q.has('page_token')) {
        offset = Number(Buffer.from(q.get('page_token'), 'base64url').toString());
      } else {
        const pageNo = Number(q.get('page') ?? 1);
        if (pageNo * perPage > 2000) {
          return json(res, 400, { code: 'DISCRETE_PAGINATION_LIMIT_EXCEEDED', details: {}, message: 'cannot fetch more than 2000 records. Use page_token', status: 'error' });
        }
        offset = (pageNo - 1) * perPage;
      }
      if (list.length === 0) {
        res.writeHead(204);
        return res.end();
      }
      const data = page(`zoho_crm:${m[1]}`, list, offset, perPage, req, res);
      if (!data) return;
      const more = offset + perPage < list.length;
      return json(res, 200, {
        data: data.map((r) => r.record),
        info: { per_page: perPage, count: data.length, more_records: more, ...(more ? { next_page_token: Buffer.from(String(offset + perPage)).toString('base64url') } : {}) },
      });
    }

    // ── Zoho Desk ──
    if ((m = url.pathname.match(/^\/zoho_desk\/api\/v1\/tickets(\/search)?$/))) {
      if (!req.headers.orgid) return json(res, 400, { errorCode: 'INVALID_OAUTH', message: 'orgId header missing' });
      const search = Boolean(m[1]);
      const limit = Number(q.get('limit') ?? 50);
      const from = Number(q.get('from') ?? (search ? 0 : 1));
      if (!search && from < 1) return json(res, 422, { errorCode: 'INVALID_DATA', message: 'from starts at 1' });
      let since = null;
      if (search) {
        const range = (q.get('modifiedTimeRange') ?? '').split(',');
        since = Date.parse(range[0]);
      }
      const list = changedSince(state.source['zoho_desk:tickets'] ?? [], since);
      const offset = search ? from : from - 1;
      if (search && offset >= list.length) {
        res.writeHead(204);
        return res.end();
      }
      const data = page('zoho_desk:tickets', list, offset, limit, req, res);
      if (!data) return;
      return json(res, 200, { data: data.map((r) => r.record) });
    }

    // ── Jira ──
    if (url.pathname === '/jira/rest/api/3/search/jql') {
      const jql = q.get('jql') ?? '';
      const rel = jql.match(/updated >= "-(\d+)m"/);
      const since = rel ? Date.now() - Number(rel[1]) * 60000 : null;
      const list = changedSince(state.source['jira:issues'] ?? [], since);
      const size = Number(q.get('maxResults') ?? 50);
      const offset = q.has('nextPageToken') ? Number(Buffer.from(q.get('nextPageToken'), 'base64url').toString()) : 0;
      const issues = page('jira:issues', list, offset, size, req, res);
      if (!issues) return;
      const last = offset + size >= list.length;
      return json(res, 200, { issues: issues.map((r) => r.record), isLast: last, ...(last ? {} : { nextPageToken: Buffer.from(String(offset + size)).toString('base64url') }) });
    }

    // ── Salesforce ──
    if ((m = url.pathname.match(/^\/salesforce\/services\/data\/v61\.0\/query(?:\/01g-(\d+))?$/))) {
      let offset = 0;
      let since = null;
      if (m[1]) {
        offset = Number(m[1]);
        since = state.salesforceSince ?? null;
      } else {
        const soql = q.get('q') ?? '';
        const w = soql.match(/SystemModstamp >= (\S+)/);
        since = w ? Date.parse(w[1]) : null;
        state.salesforceSince = since;
      }
      const list = changedSince(state.source['salesforce:Opportunity'] ?? [], since);
      const records = page('salesforce:Opportunity', list, offset, 2000, req, res);
      if (!records) return;
      const done = offset + 2000 >= list.length;
      return json(res, 200, {
        totalSize: list.length,
        done,
        records: records.map((r) => r.record),
        ...(done ? {} : { nextRecordsUrl: `/services/data/v61.0/query/01g-${offset + 2000}` }),
      });
    }
    json(res, 404, { message: `no stand-in for ${req.method} ${url.pathname}` });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  const hosts = {
    'api.hubapi.com': 'hubspot',
    'www.zohoapis.com': 'zoho_crm',
    'desk.zoho.com': 'zoho_desk',
    'your_site.atlassian.net': 'jira',
    'your_instance.my.salesforce.com': 'salesforce',
  };
  /** Sends a vendor URL to its stand-in; anything else (syncbridge's callback) is left alone. */
  const rewrite = (raw) => {
    const url = new URL(raw);
    const prefix = hosts[url.hostname.toLowerCase()];
    return prefix ? `${base}/${prefix}${url.pathname}${url.search}` : raw;
  };
  return { state, rewrite, close: () => new Promise((resolve) => server.close(resolve)) };
}

/** A stand-in of syncbridge's webhook that keeps every envelope posted to it. */
export async function startCapture() {
  const envelopes = [];
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    envelopes.push({ auth: req.headers.authorization, body: JSON.parse(Buffer.concat(chunks).toString()) });
    json(res, 202, { batch_id: String(envelopes.length) });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/api/webhooks/n8n`,
    envelopes,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
