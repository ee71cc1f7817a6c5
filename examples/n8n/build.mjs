#!/usr/bin/env node
// Builds the importable n8n workflows in this folder from one description per source, so every
// workflow pages, paces, retries and reports errors the same way: `node examples/n8n/build.mjs`
// writes them, `--check` fails when a committed file differs from what this script builds.
//
// Each data type a workflow syncs is one chain of nodes:
//
//   Sync requested ─► Plan <type> ─► Fetch <type> ──► Batch <type> ─► <type> rate limited? ─► Deliver
//                                     ▲   │ error           (Code)          │ yes
//                                     │   └──► Report <type> error ─► Deliver
//                                     └────────── Wait <type> (Retry-After) ◄┘
//
// Plan starts the type when the trigger asks for it, from its own `since`. Fetch pages through
// the source with n8n's pagination, paced within the vendor's published limit; a page answered 429
// ends the pagination, and Batch delivers what came before it, then hands the last good page's
// cursor to Wait, which sleeps for the source's Retry-After and fetches again from there. Any other
// error fails the Fetch node, whose error output reports it to syncbridge (`error` in a final
// batch), so a failed page never becomes a quiet last page. Deliver posts one batch at a time.

import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** A stable UUID-shaped id for a node, so rebuilding changes nothing. */
function id(...parts) {
  const h = createHash('sha1').update(parts.join('/')).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const TRIGGER = "$('Sync requested').first().json.body";

/** The code every Batch node shares; `source` fills in what differs per vendor. */
function batchCode(chain) {
  return `// Turns the pages Fetch ${chain.type} got into syncbridge batches of at most ${chain.size}
// records, and decides how this fetch ended: done (the last batch is final and says how many
// batches the type has, since n8n posts them concurrently), rate limited (wait for Retry-After
// and fetch again from the last good page's cursor) or failed (report the error).
const trigger = ${TRIGGER};
// Where this fetch started: the plan, or the wait after a rate-limited fetch.
const state = $('Wait ${chain.type}').isExecuted
  ? $('Wait ${chain.type}').last().json
  : $('Plan ${chain.type}').first().json;
const size = ${chain.size};
const maxWaits = 10;
const pages = $input.all().map((item) => item.json);
const ok = (page) => page.statusCode >= 200 && page.statusCode < 300;
const good = pages.filter(ok);
// One item per page; a page with no body (Zoho's 204 "nothing changed") has no records.
const recordsOf = (body) => (body && typeof body === 'object' ? ${chain.records} : []);
// A record changed while the pages were read can come twice; the later copy is the newer.
const byId = new Map();
for (const record of good.flatMap((page) => recordsOf(page.body))) {
  byId.delete(${chain.id});
  byId.set(${chain.id}, record);
}
const records = [...byId.values()];
const last = pages[pages.length - 1];
let resume = null;
let error = null;
if (last && last.statusCode === 429) {
  if (state.waits >= maxWaits) {
    error = { status: 429, message: \`still rate limited after \${maxWaits} waits: \${JSON.stringify(last.body).slice(0, 500)}\` };
  } else {
    const header = Number((last.headers ?? {})['retry-after']);
    const next = good.length ? ${chain.nextCursor} : state.cursor;
    resume = { ...state, cursor: next, waits: state.waits + 1, wait_seconds: Number.isFinite(header) && header > 0 ? Math.min(header, 300) : 10 };
  }
} else if (last && !ok(last)) {
  error = { status: last.statusCode, message: JSON.stringify(last.body).slice(0, 2000) };
}${chain.requery ? `
// ${chain.requery.why}
if (!resume && !error && last && ok(last) && ${chain.requery.when}) {
  const newest = good.flatMap((page) => recordsOf(page.body)).reduce((m, record) => Math.max(m, new Date(${chain.requery.modified}).getTime()), 0);
  resume = { ...state, since: new Date(newest).toISOString(), cursor: null, wait_seconds: 0 };
}` : ''}
const envelope = (chunk, extra) => ({
  integration_id: trigger.integration_id,
  sync_log_id: trigger.sync_log_id,
  source_type: trigger.source_type,
  data_type: '${chain.type}',
  sync_mode: trigger.sync_mode,
  ...extra,
  records: chunk,
});
const chunks = [];
for (let i = 0; i < records.length; i += size) chunks.push(records.slice(i, i + size));
const done = !resume && !error;
// The type's last batch is always sent, empty when nothing (more) came.
if (done && chunks.length === 0) chunks.push([]);
const sent = state.sent + chunks.length + (error ? 1 : 0);
const out = chunks.map((chunk, n) => {
  const final = done && n === chunks.length - 1;
  return { json: { kind: 'batch', envelope: envelope(chunk, final ? { final: true, batch_count: sent } : { final: false }) } };
});
if (error) out.push({ json: { kind: 'batch', envelope: envelope([], { final: true, batch_count: sent, error }) } });
if (resume) out.push({ json: { kind: 'resume', ...resume, sent } });
return out;
`;
}

function planCode(chain) {
  return `// Starts fetching ${chain.type} when the sync asks for it, from its own cursor
// (\`since_by_data_type\`; the single \`since\` for a syncbridge that sends only that).
const trigger = ${TRIGGER};
const wanted = trigger.data_types ?? [trigger.data_type];
if (!wanted.includes('${chain.type}')) return [];
const since = trigger.since_by_data_type
  ? (trigger.since_by_data_type['${chain.type}'] ?? null)
  : (trigger.since ?? null);
return [{ json: { data_type: '${chain.type}', since, cursor: ${chain.firstCursor ?? 'null'}, waits: 0, sent: 0 } }];
`;
}

function reportCode(chain) {
  return `// The source refused or failed a request (an error other than 429, or a failed lookup):
// syncbridge fails the sync at once with the source's status and message, moves no cursor and
// runs no sweep.
const trigger = ${TRIGGER};
const state = $('Wait ${chain.type}').isExecuted
  ? $('Wait ${chain.type}').last().json
  : $('Plan ${chain.type}').first().json;
const failure = $input.first().json.error ?? $input.first().json;
const status = Number(failure.httpCode ?? failure.statusCode ?? failure.status) || null;
const message = String(failure.description || failure.message || JSON.stringify(failure)).slice(0, 2000);
return [{ json: { kind: 'batch', envelope: {
  integration_id: trigger.integration_id,
  sync_log_id: trigger.sync_log_id,
  source_type: trigger.source_type,
  data_type: '${chain.type}',
  sync_mode: trigger.sync_mode,
  final: true,
  batch_count: state.sent + 1,
  error: { message, status },
  records: [],
} } }];
`;
}

function ifNode(name, condition, position) {
  return {
    parameters: {
      conditions: {
        options: { caseSensitive: true, leftValue: '', typeValidation: 'strict' },
        conditions: [
          {
            id: id(name, 'condition'),
            leftValue: condition,
            rightValue: '',
            operator: { type: 'boolean', operation: 'true', singleValue: true },
          },
        ],
        combinator: 'and',
      },
      options: {},
    },
    name,
    type: 'n8n-nodes-base.if',
    typeVersion: 2,
    position,
  };
}

function codeNode(name, jsCode, position) {
  return {
    parameters: { mode: 'runOnceForAllItems', jsCode },
    name,
    type: 'n8n-nodes-base.code',
    typeVersion: 2,
    position,
  };
}

/** An HTTP Request node calling the source with its credential. */
function sourceRequest(workflow, name, request, position) {
  const node = {
    parameters: {
      method: request.method ?? 'GET',
      url: request.url,
      authentication: 'predefinedCredentialType',
      nodeCredentialType: workflow.credential.type,
    },
    name,
    type: 'n8n-nodes-base.httpRequest',
    typeVersion: 4.2,
    position,
    credentials: { [workflow.credential.type]: { id: '', name: workflow.credential.name } },
    onError: 'continueErrorOutput',
  };
  const p = node.parameters;
  if (request.query) Object.assign(p, { sendQuery: true, specifyQuery: 'json', jsonQuery: request.query });
  if (request.headers) Object.assign(p, { sendHeaders: true, specifyHeaders: 'json', jsonHeaders: request.headers });
  if (request.body) Object.assign(p, { sendBody: true, specifyBody: 'json', jsonBody: request.body });
  p.options = {};
  if (request.pagination) {
    // The full response (status, headers, body) of every page, errors included, so Batch can
    // tell a 429 from a last page; the pagination itself fails on any other error.
    p.options.response = { response: { fullResponse: true, neverError: true } };
    p.options.pagination = {
      pagination: {
        ...request.pagination,
        paginationCompleteWhen: 'other',
        limitPagesFetched: true,
        maxRequests: 10000,
        requestInterval: workflow.pause_ms,
      },
    };
  }
  if (request.batching) p.options.batching = { batch: request.batching };
  return node;
}

function build(workflow) {
  const nodes = [];
  const connections = {};
  const connect = (from, to, output = 0) => {
    const main = (connections[from] ??= { main: [] }).main;
    while (main.length <= output) main.push([]);
    main[output].push({ node: to, type: 'main', index: 0 });
  };
  nodes.push({
    parameters: { httpMethod: 'POST', path: workflow.path, responseMode: 'onReceived', options: {} },
    name: 'Sync requested',
    type: 'n8n-nodes-base.webhook',
    typeVersion: 2,
    position: [0, 300],
    webhookId: id(workflow.file, 'webhook'),
  });
  const deliverAt = [1820, 300];
  workflow.chains.forEach((chain, n) => {
    const y = 300 + n * 420;
    const T = chain.type;
    nodes.push(codeNode(`Plan ${T}`, planCode(chain), [220, y]));
    nodes.push(sourceRequest(workflow, `Fetch ${T}`, chain.fetch, [440, y]));
    nodes.push(codeNode(`Batch ${T}`, batchCode(chain), [660, y]));
    nodes.push(ifNode(`${T} rate limited?`, "={{ $json.kind === 'resume' }}", [880, y]));
    nodes.push({
      parameters: { amount: '={{ $json.wait_seconds }}', unit: 'seconds' },
      name: `Wait ${T}`,
      type: 'n8n-nodes-base.wait',
      typeVersion: 1.1,
      position: [880, y + 200],
      webhookId: id(workflow.file, T, 'wait'),
    });
    nodes.push(codeNode(`Report ${T} error`, reportCode(chain), [660, y + 200]));
    connect('Sync requested', `Plan ${T}`);
    connect(`Plan ${T}`, `Fetch ${T}`);
    connect(`Fetch ${T}`, `Batch ${T}`, 0);
    connect(`Fetch ${T}`, `Report ${T} error`, 1);
    connect(`Batch ${T}`, `${T} rate limited?`);
    connect(`${T} rate limited?`, `Wait ${T}`, 0);
    connect(`Wait ${T}`, `Fetch ${T}`);
    connect(`Report ${T} error`, 'Deliver to syncbridge');
    let tail = `${T} rate limited?`;
    let tailOutput = 1;
    for (const [i, step] of (chain.enrich ?? []).entries()) {
      // Lookups only for batches that have records (an empty last batch needs none).
      if (i === 0) {
        nodes.push(ifNode(`${T} need ${step.what}?`, '={{ $json.envelope.records.length > 0 }}', [1100, y]));
        connect(tail, `${T} need ${step.what}?`, tailOutput);
        connect(`${T} need ${step.what}?`, 'Deliver to syncbridge', 1);
        tail = `${T} need ${step.what}?`;
        tailOutput = 0;
      }
      for (const [k, lookup] of step.requests.entries()) {
        nodes.push(sourceRequest(workflow, lookup.name, lookup, [1320 + k * 220, y - 160]));
        connect(tail, lookup.name, tailOutput);
        connect(lookup.name, `Report ${T} error`, 1);
        tail = lookup.name;
        tailOutput = 0;
      }
      nodes.push(codeNode(step.name, step.code, [1320 + step.requests.length * 220, y - 160]));
      connect(tail, step.name, tailOutput);
      tail = step.name;
      tailOutput = 0;
    }
    connect(tail, 'Deliver to syncbridge', tailOutput);
  });
  nodes.push({
    parameters: {
      method: 'POST',
      url: `={{ ${TRIGGER}.callback_url }}`,
      authentication: 'genericCredentialType',
      genericAuthType: 'httpHeaderAuth',
      sendBody: true,
      specifyBody: 'json',
      jsonBody: '={{ JSON.stringify($json.envelope) }}',
      options: { timeout: 120000, batching: { batch: { batchSize: 1, batchInterval: 100 } } },
    },
    name: 'Deliver to syncbridge',
    type: 'n8n-nodes-base.httpRequest',
    typeVersion: 4.2,
    position: deliverAt,
    retryOnFail: true,
    maxTries: 5,
    waitBetweenTries: 5000,
    credentials: { httpHeaderAuth: { id: '', name: 'syncbridge API key' } },
  });
  nodes.push({
    parameters: { content: workflow.note, height: 340, width: 560 },
    name: 'About this workflow',
    type: 'n8n-nodes-base.stickyNote',
    typeVersion: 1,
    position: [0, -80],
  });
  for (const node of nodes) node.id = id(workflow.file, node.name);
  return {
    name: workflow.name,
    nodes,
    connections,
    active: false,
    settings: { executionOrder: 'v1' },
    pinData: {},
    meta: { templateCredsSetupCompleted: false },
    tags: [],
  };
}

const NOTE_TAIL = `\n\nThe trigger's \`since_by_data_type\` says where each data type starts (null: everything). Pages are paced within the vendor's published limit; a 429 makes the workflow deliver what it has, wait for the Retry-After and go on from the last good page; any other error reaches syncbridge as an \`error\` in the type's final batch, and the sync fails at once (no cursor move, no sweep). Batches of at most 1,000 records go to \`callback_url\` one at a time with the integration's syncbridge API key (Header Auth credential \`Authorization: Bearer sbk_…\`); the last of each type carries \`final: true\` and \`batch_count\`.\n\nSee docs/N8N.md.`;

// HubSpot's search returns at most 10,000 results per query (an `after` of 10,000 is refused):
// the pagination stops short of it, and the fetch starts again from the newest modification seen.
const hubspotRequery = (modified) => ({
  why: "HubSpot's search stops at 10,000 results: the rest is asked for from the newest modification seen (the records at that instant come again, and count unchanged).",
  when: 'Number(last.body?.paging?.next?.after ?? 0) >= 10000',
  modified: `record.properties?.${modified} ?? record.updatedAt`,
});

// HubSpot: search endpoints allow about 5 requests a second; 250 ms apart stays under it.
const hubspotSearch = (object, properties, modified) => ({
  method: 'POST',
  url: `https://api.hubapi.com/crm/v3/objects/${object}/search`,
  body: `={{ JSON.stringify({ limit: 100, after: $json.cursor ?? undefined, sorts: [{ propertyName: '${modified}', direction: 'ASCENDING' }], properties: ${JSON.stringify(properties).replaceAll('"', "'")}, filterGroups: $json.since ? [{ filters: [{ propertyName: '${modified}', operator: 'GTE', value: String(new Date($json.since).getTime()) }] }] : [] }) }}`,
  pagination: {
    paginationMode: 'updateAParameterInEachRequest',
    parameters: { parameters: [{ type: 'body', name: 'after', value: '={{ $response.body.paging.next.after }}' }] },
    completeExpression: '={{ $response.statusCode === 429 || ($response.statusCode < 300 && (!$response.body.paging || Number($response.body.paging.next.after) >= 10000)) }}',
  },
});

const ZOHO_CRM_PAGE = {
  // `page` reaches only the first 2,000 records: every page after the first is asked for by the
  // `page_token` the previous one returned, which has no such cap.
  paginationMode: 'updateAParameterInEachRequest',
  parameters: { parameters: [{ type: 'qs', name: 'page_token', value: '={{ $response.body.info.next_page_token }}' }] },
  completeExpression: '={{ $response.statusCode === 204 || $response.statusCode === 429 || ($response.statusCode < 300 && !$response.body.info.more_records) }}',
};
const zohoCrm = (module, fields) => ({
  url: `https://www.zohoapis.com/crm/v6/${module}`,
  query: `={{ JSON.stringify(Object.assign({ fields: '${fields}', per_page: 200, sort_by: 'Modified_Time', sort_order: 'asc' }, $json.cursor ? { page_token: $json.cursor } : {})) }}`,
  // Zoho answers 204 with no body when nothing changed since If-Modified-Since.
  headers: "={{ JSON.stringify($json.since ? { 'If-Modified-Since': new Date($json.since).toISOString() } : {}) }}",
  pagination: ZOHO_CRM_PAGE,
});

const WORKFLOWS = [
  {
    file: 'hubspot',
    name: 'syncbridge: HubSpot contacts and deals',
    path: 'syncbridge-hubspot',
    credential: { type: 'hubspotAppToken', name: 'HubSpot private app' },
    pause_ms: 250,
    note: `## syncbridge: HubSpot contacts and deals\n\nHubSpot private app token with crm.objects.contacts.read, crm.objects.deals.read and crm.objects.companies.read. Each deal gets its associated company's domain (\`company_domain\`, associations v4 and companies batch read), so it matches an account. The search API returns at most 10,000 results per query; past them the workflow asks again from the newest modification it has seen.` + NOTE_TAIL,
    chains: [
      {
        type: 'contacts',
        size: 1000,
        records: 'body.results ?? []',
        id: 'record.id',
        nextCursor: 'good[good.length - 1].body.paging?.next?.after ?? state.cursor',
        requery: hubspotRequery('lastmodifieddate'),
        fetch: hubspotSearch('contacts', ['email', 'firstname', 'lastname', 'phone', 'jobtitle', 'company', 'lifecyclestage', 'createdate', 'lastmodifieddate'], 'lastmodifieddate'),
      },
      {
        type: 'deals',
        // One associations and one companies batch read per batch (companies take 100 ids).
        size: 100,
        records: 'body.results ?? []',
        id: 'record.id',
        nextCursor: 'good[good.length - 1].body.paging?.next?.after ?? state.cursor',
        requery: hubspotRequery('hs_lastmodifieddate'),
        fetch: hubspotSearch('deals', ['dealname', 'amount', 'deal_currency_code', 'dealstage', 'pipeline', 'closedate', 'hs_is_closed', 'hs_is_closed_won', 'dealtype', 'hubspot_owner_id', 'createdate', 'hs_lastmodifieddate'], 'hs_lastmodifieddate'),
        enrich: [
          {
            what: 'companies',
            name: 'Add company domain',
            requests: [
              {
                name: 'Read deal companies',
                method: 'POST',
                url: 'https://api.hubapi.com/crm/v4/associations/deals/companies/batch/read',
                body: '={{ JSON.stringify({ inputs: $json.envelope.records.map((deal) => ({ id: deal.id })) }) }}',
                batching: { batchSize: 1, batchInterval: 100 },
              },
              {
                name: 'Read companies',
                method: 'POST',
                url: 'https://api.hubapi.com/crm/v3/objects/companies/batch/read',
                body: "={{ JSON.stringify({ properties: ['domain', 'name'], inputs: [...new Set(($json.results ?? []).flatMap((r) => (r.to ?? []).map((t) => String(t.toObjectId))))].map((id) => ({ id })) }) }}",
                batching: { batchSize: 1, batchInterval: 100 },
              },
            ],
            code: `// Gives each deal the domain (and name) of its first associated company, which is what
// syncbridge matches deals to accounts by.
return $input.all().map((item, i) => {
  const batch = $('Read deal companies').itemMatching(i);
  const envelope = $('deals need companies?').itemMatching(i).json.envelope;
  const companies = new Map((item.json.results ?? []).map((c) => [String(c.id), c.properties ?? {}]));
  const companyOf = new Map((batch.json.results ?? []).map((r) => [String(r.from.id), String((r.to ?? [])[0]?.toObjectId ?? '')]));
  const records = envelope.records.map((deal) => {
    const company = companies.get(companyOf.get(String(deal.id)) ?? '');
    return company ? { ...deal, company_domain: company.domain ?? null, company_name: company.name ?? null } : deal;
  });
  return { json: { kind: 'batch', envelope: { ...envelope, records } } };
});
`,
          },
        ],
      },
    ],
  },
  {
    file: 'zoho-crm',
    name: 'syncbridge: Zoho CRM contacts and deals',
    path: 'syncbridge-zoho-crm',
    credential: { type: 'zohoOAuth2Api', name: 'Zoho account' },
    // Zoho CRM limits concurrent calls and credits per day; one call at a time, 200 ms apart.
    pause_ms: 200,
    note: `## syncbridge: Zoho CRM contacts and deals\n\nUse the data centre of your Zoho account in the URLs (zohoapis.eu, .in, …). Incremental syncs send If-Modified-Since; Zoho answers 204 when nothing changed, which is an empty last batch, never an error. Pages after the first are asked for by \`page_token\`, so syncs past 2,000 records get them all.` + NOTE_TAIL,
    chains: [
      {
        type: 'contacts',
        size: 1000,
        records: 'body.data ?? []',
        id: 'record.id',
        nextCursor: 'good[good.length - 1].body.info?.next_page_token ?? state.cursor',
        fetch: zohoCrm('Contacts', 'First_Name,Last_Name,Full_Name,Email,Phone,Mobile,Title,Department,Account_Name,Owner,Lead_Source,Mailing_City,Mailing_Country,Created_Time,Modified_Time'),
      },
      {
        type: 'deals',
        size: 1000,
        records: 'body.data ?? []',
        id: 'record.id',
        nextCursor: 'good[good.length - 1].body.info?.next_page_token ?? state.cursor',
        fetch: zohoCrm('Deals', 'Deal_Name,Amount,Currency,Stage,Probability,Closing_Date,Type,Account_Name,Contact_Name,Owner,Lead_Source,Created_Time,Modified_Time'),
      },
    ],
  },
  {
    file: 'zoho-desk-tickets',
    name: 'syncbridge: Zoho Desk tickets',
    path: 'syncbridge-zoho-desk-tickets',
    credential: { type: 'zohoOAuth2Api', name: 'Zoho account' },
    pause_ms: 300,
    note: `## syncbridge: Zoho Desk tickets\n\nSet your Zoho Desk organisation id in the \`orgId\` header and your data centre's domain (desk.zoho.eu, .in, …). Incremental syncs use \`tickets/search\` with \`modifiedTimeRange\`, whose \`from\` counts from 0; full syncs list \`tickets\`, whose \`from\` counts from 1.` + NOTE_TAIL,
    chains: [
      {
        type: 'tickets',
        size: 1000,
        records: 'body.data ?? []',
        id: 'record.id',
        // The cursor is the `from` of the next page: each endpoint counts it its own way.
        firstCursor: 'since ? 0 : 1',
        nextCursor: 'state.cursor + good.length * 100',
        fetch: {
          url: "={{ $json.since ? 'https://desk.zoho.com/api/v1/tickets/search' : 'https://desk.zoho.com/api/v1/tickets' }}",
          query: "={{ JSON.stringify(Object.assign({ limit: 100, from: $json.cursor }, $json.since ? { modifiedTimeRange: new Date($json.since).toISOString() + ',' + new Date().toISOString(), sortBy: 'modifiedTime' } : { sortBy: 'createdTime' })) }}",
          headers: "={{ JSON.stringify({ orgId: 'YOUR_ZOHO_DESK_ORG_ID' }) }}",
          pagination: {
            paginationMode: 'updateAParameterInEachRequest',
            parameters: { parameters: [{ type: 'qs', name: 'from', value: '={{ $json.cursor + $pageCount * 100 }}' }] },
            completeExpression: '={{ $response.statusCode === 204 || $response.statusCode === 429 || ($response.statusCode < 300 && ($response.body.data ?? []).length < 100) }}',
          },
        },
      },
    ],
  },
  {
    file: 'jira-issues',
    name: 'syncbridge: Jira issues as tickets',
    path: 'syncbridge-jira-issues',
    credential: { type: 'jiraSoftwareCloudApi', name: 'Jira account' },
    pause_ms: 100,
    note: `## syncbridge: Jira issues as tickets\n\nReplace YOUR_SITE and the project in the JQL. \`since\` becomes a relative JQL date (\`updated >= "-90m"\`, rounded to the minute before it), so the Jira user's time zone does not matter.` + NOTE_TAIL,
    chains: [
      {
        type: 'tickets',
        size: 1000,
        records: 'body.issues ?? []',
        id: 'record.id',
        nextCursor: 'good[good.length - 1].body.nextPageToken ?? state.cursor',
        fetch: {
          url: 'https://YOUR_SITE.atlassian.net/rest/api/3/search/jql',
          query: "={{ JSON.stringify(Object.assign({ jql: ($json.since ? 'updated >= \"-' + (Math.ceil((Date.now() - new Date($json.since).getTime()) / 60000) + 1) + 'm\" AND ' : '') + 'project = SUP ORDER BY updated ASC', fields: 'summary,status,priority,issuetype,reporter,assignee,created,updated,resolutiondate,labels', maxResults: 100 }, $json.cursor ? { nextPageToken: $json.cursor } : {})) }}",
          pagination: {
            paginationMode: 'updateAParameterInEachRequest',
            parameters: { parameters: [{ type: 'qs', name: 'nextPageToken', value: '={{ $response.body.nextPageToken }}' }] },
            completeExpression: '={{ $response.statusCode === 429 || ($response.statusCode < 300 && ($response.body.isLast !== false || !$response.body.nextPageToken)) }}',
          },
        },
      },
    ],
  },
  {
    file: 'salesforce-opportunities',
    name: 'syncbridge: Salesforce opportunities as deals',
    path: 'syncbridge-salesforce-opportunities',
    credential: { type: 'salesforceOAuth2Api', name: 'Salesforce account' },
    pause_ms: 100,
    note: `## syncbridge: Salesforce opportunities as deals\n\nReplace YOUR_INSTANCE twice (query URL and next-page URL). Drop CurrencyIsoCode from the query if your org has a single currency. Salesforce answers up to 2,000 records a page.` + NOTE_TAIL,
    chains: [
      {
        type: 'deals',
        size: 1000,
        records: 'body.records ?? []',
        id: 'record.Id',
        nextCursor: 'good[good.length - 1].body.nextRecordsUrl ?? state.cursor',
        fetch: {
          // The SOQL rides in the URL, not in the query parameters, which n8n would add to every
          // next-records URL too.
          url: "={{ 'https://YOUR_INSTANCE.my.salesforce.com' + ($json.cursor ?? '/services/data/v61.0/query?q=' + encodeURIComponent('SELECT Id, Name, Amount, CurrencyIsoCode, StageName, Probability, CloseDate, IsClosed, IsWon, Type, Owner.Name, Owner.Email, Account.Name, Account.Website, CreatedDate, LastModifiedDate FROM Opportunity' + ($json.since ? ' WHERE SystemModstamp >= ' + new Date($json.since).toISOString().replace(/\\.\\d{3}Z$/, 'Z') : '') + ' ORDER BY SystemModstamp')) }}",
          pagination: {
            paginationMode: 'responseContainsNextURL',
            nextURL: "={{ 'https://YOUR_INSTANCE.my.salesforce.com' + $response.body.nextRecordsUrl }}",
            completeExpression: '={{ $response.statusCode === 429 || ($response.statusCode < 300 && $response.body.done !== false) }}',
          },
        },
      },
    ],
  },
];

const check = process.argv.includes('--check');
let stale = 0;
for (const workflow of WORKFLOWS) {
  const path = join(here, `${workflow.file}.json`);
  const text = JSON.stringify(build(workflow), null, 2) + '\n';
  if (check) {
    let current = '';
    try {
      current = readFileSync(path, 'utf8');
    } catch {}
    if (current !== text) {
      console.error(`${path} is not what build.mjs makes; run node examples/n8n/build.mjs`);
      stale += 1;
    }
  } else {
    writeFileSync(path, text);
  }
}
process.exit(stale ? 1 : 0);
