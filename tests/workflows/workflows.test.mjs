// The shipped n8n workflows (examples/n8n/*.json) run by tests/workflows/n8n.mjs against
// stand-ins of the vendors' APIs: several pages, a 429 mid-way, a 500, an empty 204, the 2,000
// cap of Zoho CRM's page numbers, a repeated id. Asserts the envelopes each posts to syncbridge.
// Run with `node --test tests/workflows/` (cargo test runs it too, from tests/api/n8n_templates.rs).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, beforeEach, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { runWorkflow } from './n8n.mjs';
import { startCapture, startStandIns } from './stand-ins.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const workflow = (name) => JSON.parse(readFileSync(join(root, 'examples', 'n8n', `${name}.json`), 'utf8'));

let vendors;
let capture;
before(async () => {
  vendors = await startStandIns();
  capture = await startCapture();
});
after(async () => {
  await vendors.close();
  await capture.close();
});
beforeEach(() => {
  vendors.state.source = {};
  vendors.state.companies.clear();
  vendors.state.dealCompany.clear();
  vendors.state.fault = null;
  vendors.state.rejected = 0;
  vendors.state.requests = [];
  vendors.state.hubspotCalls = [];
  capture.envelopes.length = 0;
});

const HOUR = 3600 * 1000;
const iso = (ms) => new Date(ms).toISOString();

function trigger(source, dataTypes, since = {}) {
  const byType = Object.fromEntries(dataTypes.map((t) => [t, since[t] ?? null]));
  const values = Object.values(byType);
  return {
    integration_id: '6f1c2d0e-8a41-4c7e-9b0a-1d2e3f405a61',
    sync_log_id: 'b7e2a9c4-1f3d-4e8b-a2c5-0d9e8f7a6b51',
    source_type: source,
    data_types: dataTypes,
    data_type: dataTypes.length === 1 ? dataTypes[0] : null,
    sync_mode: values.every((v) => v === null) ? 'full' : 'incremental',
    since: values.includes(null) ? null : values.sort()[0],
    since_by_data_type: byType,
    callback_url: capture.url,
  };
}

async function run(name, body, paceScale = 1) {
  return runWorkflow(workflow(name), { body, rewrite: vendors.rewrite, timeScale: 0.01, paceScale });
}

/** What syncbridge got for one data type, checked for the contract every workflow keeps. */
function delivered(type) {
  const mine = capture.envelopes.filter((e) => e.body.data_type === type).map((e) => e.body);
  assert.ok(capture.envelopes.every((e) => e.auth === 'Bearer sbk_test'), 'every batch carries the key');
  const finals = mine.filter((e) => e.final);
  assert.equal(finals.length, 1, `${type}: exactly one final batch`);
  assert.equal(finals[0].batch_count, mine.length, `${type}: the final batch counts every batch`);
  for (const e of mine) {
    assert.ok(e.records.length <= 1000, `${type}: batches of at most 1,000`);
    assert.ok(e.records.every((r) => r && typeof r === 'object'), `${type}: records are objects`);
  }
  const records = mine.flatMap((e) => e.records);
  return { batches: mine, records, final: finals[0], error: finals[0].error ?? null };
}

const hubspotDeal = (i, modified) => ({
  modified,
  record: { id: String(9000 + i), properties: { dealname: `Deal ${i}`, amount: '100', hs_lastmodifieddate: iso(modified) }, archived: false },
});
const hubspotContact = (i, modified) => ({
  modified,
  record: { id: String(100 + i), properties: { email: `p${i}@acme.com`, lastmodifieddate: iso(modified) } },
});

function hubspotSource(deals, contacts) {
  const t0 = Date.now() - 48 * HOUR;
  vendors.state.source['hubspot:deals'] = Array.from({ length: deals }, (_, i) => hubspotDeal(i, t0 + i * 1000));
  vendors.state.source['hubspot:contacts'] = Array.from({ length: contacts }, (_, i) => hubspotContact(i, t0 + i * 1000));
  vendors.state.companies.set('77', { domain: 'acme-logistics.com', name: 'Acme Logistics' });
  vendors.state.companies.set('78', { domain: 'globex.co.uk', name: 'Globex' });
  for (let i = 0; i < deals; i += 1) if (i % 10 !== 9) vendors.state.dealCompany.set(String(9000 + i), i % 2 ? '77' : '78');
}

test('HubSpot: 2,500 deals within the search rate limit, each with its company, and contacts', async () => {
  hubspotSource(2500, 300);
  await run('hubspot', trigger('hubspot', ['contacts', 'deals']));
  assert.equal(vendors.state.rejected, 0, 'no search request over 5 a second');
  const deals = delivered('deals');
  assert.equal(deals.error, null);
  assert.equal(new Set(deals.records.map((d) => d.id)).size, 2500);
  const withCompany = deals.records.filter((d) => d.company_domain);
  assert.equal(withCompany.length, 2250, 'every deal with an associated company has its domain');
  assert.equal(deals.records.find((d) => d.id === '9001').company_domain, 'acme-logistics.com');
  assert.equal(deals.records.find((d) => d.id === '9009').company_domain, undefined);
  const contacts = delivered('contacts');
  assert.equal(contacts.records.length, 300);
  assert.equal(contacts.error, null);
});

test('HubSpot: a 429 mid-way delivers what came, waits for Retry-After, and goes on from there', async () => {
  hubspotSource(1000, 0);
  let hit = false;
  vendors.state.fault = (collection, page) => {
    if (collection === 'hubspot:deals' && page === 3 && !hit) {
      hit = true;
      return { status: 429, body: { status: 'error', message: 'You have reached your secondly limit.' }, headers: { 'retry-after': '1' } };
    }
    return null;
  };
  await run('hubspot', trigger('hubspot', ['deals']));
  const deals = delivered('deals');
  assert.equal(deals.error, null);
  assert.equal(deals.records.length, 1000);
  assert.equal(new Set(deals.records.map((d) => d.id)).size, 1000, 'no page lost, none twice');
  const searches = vendors.state.requests.filter((r) => r.path.endsWith('/deals/search'));
  assert.equal(searches.length, 11, 'ten pages and the one refused');
  const refusedAt = searches[3].at;
  assert.ok(searches[4].at - refusedAt >= 1000, 'the retry waited for Retry-After');
  assert.equal(
    vendors.state.requests.filter((r) => r.path.endsWith('/contacts/search')).length,
    0,
    'a deals-only sync fetches no contacts',
  );
});

test('HubSpot: a 500 mid-way is reported as the error of its type, never as a last page', async () => {
  hubspotSource(50, 450);
  vendors.state.fault = (collection, page) =>
    collection === 'hubspot:contacts' && page === 2 ? { status: 500, body: { status: 'error', message: 'internal error', correlationId: 'c-1' } } : null;
  await run('hubspot', trigger('hubspot', ['contacts', 'deals'], { contacts: iso(Date.now() - 72 * HOUR) }));
  const contacts = delivered('contacts');
  assert.equal(contacts.error.status, 500);
  assert.match(contacts.error.message, /internal error/);
  assert.equal(contacts.final.records.length, 0);
  assert.equal(delivered('deals').error, null, 'the other type is unaffected');
  assert.equal(delivered('deals').records.length, 50);
});

test('HubSpot: past the search API’s 10,000 results, the fetch goes on from the newest change seen', async () => {
  hubspotSource(0, 10250);
  // Pacing is what the first test checks; here it would only make the test slow.
  vendors.state.hubspotPerSecond = 100000;
  try {
    await run('hubspot', trigger('hubspot', ['contacts']), 0);
  } finally {
    vendors.state.hubspotPerSecond = 5;
  }
  const contacts = delivered('contacts');
  assert.equal(contacts.error, null);
  assert.equal(new Set(contacts.records.map((c) => c.id)).size, 10250, 'none lost past 10,000');
  const searches = vendors.state.requests.filter((r) => r.path.endsWith('/search'));
  assert.ok(searches.every((r) => Number(r.body.after ?? 0) < 10000), 'never past the cap');
  assert.equal(searches.filter((r) => r.body.after === undefined).length, 2, 'asked again once');
});

const zohoContact = (i, modified) => ({ modified, record: { id: String(5725767000000000 + i), Last_Name: `L${i}`, Email: `z${i}@acme.com`, Modified_Time: iso(modified) } });

test('Zoho CRM: 2,500 contacts past the 2,000 cap of page numbers, and deals beside them', async () => {
  const t0 = Date.now() - 24 * HOUR;
  vendors.state.source['zoho_crm:Contacts'] = Array.from({ length: 2500 }, (_, i) => zohoContact(i, t0 + i));
  vendors.state.source['zoho_crm:Deals'] = Array.from({ length: 30 }, (_, i) => ({ modified: t0, record: { id: String(88 + i), Deal_Name: `D${i}` } }));
  await run('zoho-crm', trigger('zoho_crm', ['contacts', 'deals']));
  const contacts = delivered('contacts');
  assert.equal(new Set(contacts.records.map((c) => c.id)).size, 2500);
  assert.equal(contacts.batches.length, 3);
  assert.ok(vendors.state.requests.every((r) => !r.query.page || Number(r.query.page) <= 10));
  assert.equal(delivered('deals').records.length, 30);
});

test('Zoho CRM: an incremental sync with nothing new (204) sends one empty final batch per type', async () => {
  vendors.state.source['zoho_crm:Contacts'] = [zohoContact(1, Date.now() - 48 * HOUR)];
  const since = iso(Date.now() - HOUR);
  await run('zoho-crm', trigger('zoho_crm', ['contacts', 'deals'], { contacts: since, deals: since }));
  for (const type of ['contacts', 'deals']) {
    const got = delivered(type);
    assert.deepEqual(got.batches, [{ ...got.final, records: [] }]);
    assert.equal(got.error, null);
  }
});

test('Zoho Desk: search counts `from` from 0 (the first changed ticket is in), the list from 1', async () => {
  const t0 = Date.now() - 10 * HOUR;
  vendors.state.source['zoho_desk:tickets'] = Array.from({ length: 250 }, (_, i) => ({
    modified: t0 + i * 60000,
    record: { id: String(1000 + i), ticketNumber: String(i), modifiedTime: iso(t0 + i * 60000) },
  }));
  // Changed since: tickets 100 to 249, 150 of them, on two pages of the search.
  await run('zoho-desk-tickets', trigger('zoho_desk', ['tickets'], { tickets: iso(t0 + 100 * 60000) }));
  let tickets = delivered('tickets');
  assert.equal(tickets.records.length, 150);
  assert.equal(tickets.records[0].id, '1100', 'the first changed ticket');
  capture.envelopes.length = 0;
  await run('zoho-desk-tickets', trigger('zoho_desk', ['tickets']));
  tickets = delivered('tickets');
  assert.equal(new Set(tickets.records.map((t) => t.id)).size, 250);
  assert.ok(vendors.state.requests.every((r) => !r.path.endsWith('/tickets') || Number(r.query.from) >= 1));
});

test('Jira: pages by nextPageToken, a repeated id arrives once (its newer copy), a 429 resumes', async () => {
  const t0 = Date.now() - 5 * HOUR;
  const issues = Array.from({ length: 250 }, (_, i) => ({ modified: t0 + i, record: { id: String(10000 + i), key: `SUP-${i}`, fields: { summary: `v1 ${i}` } } }));
  // Issue 10005 changed while the pages were read: it comes again, later, with its new summary.
  issues.push({ modified: t0 + 1000, record: { id: '10005', key: 'SUP-5', fields: { summary: 'v2 5' } } });
  vendors.state.source['jira:issues'] = issues;
  const body = trigger('jira', ['tickets'], { tickets: iso(t0 - 60000) });
  await run('jira-issues', body);
  let tickets = delivered('tickets');
  let ids = tickets.records.map((t) => t.id);
  assert.equal(ids.length, 250, 'each issue once');
  assert.equal(tickets.records.find((t) => t.id === '10005').fields.summary, 'v2 5');
  assert.ok(vendors.state.requests.some((r) => /updated >= "-\d+m"/.test(r.query.jql)));

  // A 429 on the second page: the first is delivered, the rest after Retry-After from its token.
  capture.envelopes.length = 0;
  let hit = false;
  vendors.state.fault = (collection, page) => {
    if (collection === 'jira:issues' && page === 1 && !hit) {
      hit = true;
      return { status: 429, body: { errorMessages: ['Rate limit exceeded'] }, headers: { 'retry-after': '1' } };
    }
    return null;
  };
  await run('jira-issues', body);
  tickets = delivered('tickets');
  ids = tickets.records.map((t) => t.id);
  assert.equal(new Set(ids).size, 250);
  assert.equal(ids.length, 251, 'the changed issue came in both fetches');
  // syncbridge keeps the later delivery of a record: here its newer copy.
  const copies = tickets.batches.flatMap((b) => b.records).filter((t) => t.id === '10005');
  assert.equal(copies[copies.length - 1].fields.summary, 'v2 5');
});

test('Salesforce: 4,500 opportunities over nextRecordsUrl; a 500 on a later page is reported', async () => {
  const t0 = Date.now() - 3 * HOUR;
  vendors.state.source['salesforce:Opportunity'] = Array.from({ length: 4500 }, (_, i) => ({ modified: t0 + i, record: { attributes: { type: 'Opportunity' }, Id: `006${i}`, Name: `O${i}` } }));
  await run('salesforce-opportunities', trigger('salesforce', ['deals']));
  assert.equal(new Set(delivered('deals').records.map((d) => d.Id)).size, 4500);
  const next = vendors.state.requests.filter((r) => r.path.includes('/query/01g-'));
  assert.equal(next.length, 2);
  assert.ok(next.every((r) => !('q' in r.query)), 'next-records URLs are followed as given');
  capture.envelopes.length = 0;
  vendors.state.fault = (collection, page) =>
    collection === 'salesforce:Opportunity' && page === 1 ? { status: 500, body: [{ errorCode: 'UNKNOWN_EXCEPTION', message: 'An unexpected error occurred' }] } : null;
  await run('salesforce-opportunities', trigger('salesforce', ['deals'], { deals: iso(t0 - 1000) }));
  const deals = delivered('deals');
  assert.equal(deals.error.status, 500);
  assert.match(deals.error.message, /unexpected error/);
  assert.equal(deals.records.length, 0, 'nothing of the failed fetch is delivered as complete');
});

test('every workflow reports a refused first request (401) as its type’s error', async () => {
  vendors.state.fault = () => ({ status: 401, body: { message: 'invalid token', code: 'INVALID_TOKEN' } });
  const cases = [
    ['hubspot', 'hubspot', ['contacts', 'deals']],
    ['zoho-crm', 'zoho_crm', ['contacts', 'deals']],
    ['zoho-desk-tickets', 'zoho_desk', ['tickets']],
    ['jira-issues', 'jira', ['tickets']],
    ['salesforce-opportunities', 'salesforce', ['deals']],
  ];
  for (const [name, source, types] of cases) {
    vendors.state.source = {
      'hubspot:deals': [hubspotDeal(1, 0)],
      'hubspot:contacts': [hubspotContact(1, 0)],
      'zoho_crm:Contacts': [zohoContact(1, 0)],
      'zoho_crm:Deals': [zohoContact(2, 0)],
      'zoho_desk:tickets': [{ modified: 0, record: { id: '1' } }],
      'jira:issues': [{ modified: 0, record: { id: '1' } }],
      'salesforce:Opportunity': [{ modified: 0, record: { Id: '1' } }],
    };
    capture.envelopes.length = 0;
    await run(name, trigger(source, types));
    for (const type of types) {
      const got = delivered(type);
      assert.equal(got.error?.status, 401, `${name} ${type}`);
      assert.match(got.error.message, /invalid token/, `${name} ${type}`);
    }
  }
});

// Every workflow and data type, the same cases: several pages with a 429 mid-way and an id met
// twice while paging, then an incremental sync that finds nothing new.
const CHAINS = [
  ['hubspot', 'hubspot', 'contacts', 'hubspot:contacts', 'id', 100],
  ['hubspot', 'hubspot', 'deals', 'hubspot:deals', 'id', 100],
  ['zoho-crm', 'zoho_crm', 'contacts', 'zoho_crm:Contacts', 'id', 200],
  ['zoho-crm', 'zoho_crm', 'deals', 'zoho_crm:Deals', 'id', 200],
  ['zoho-desk-tickets', 'zoho_desk', 'tickets', 'zoho_desk:tickets', 'id', 100],
  ['jira-issues', 'jira', 'tickets', 'jira:issues', 'id', 100],
  ['salesforce-opportunities', 'salesforce', 'deals', 'salesforce:Opportunity', 'Id', 2000],
];

for (const [name, source, type, collection, idField, pageSize] of CHAINS) {
  test(`${name} ${type}: several pages, a 429 mid-way, a repeated id, then nothing new`, async () => {
    const t0 = Date.now() - 6 * HOUR;
    const n = pageSize * 3 + 7;
    const list = Array.from({ length: n }, (_, i) => ({ modified: t0 + i * 10, record: { [idField]: `r${i}`, version: 1 } }));
    // r1 changed while the pages were read: met again on the last page, newer.
    list.push({ modified: t0 + n * 10, record: { [idField]: 'r1', version: 2 } });
    vendors.state.source[collection] = list;
    vendors.state.hubspotPerSecond = 100000;
    let refusedAt = null;
    let refusedPath = null;
    vendors.state.fault = (c, page, req) => {
      if (c === collection && page === 1 && refusedAt === null) {
        refusedAt = Date.now();
        refusedPath = new URL(req.url, 'http://stand-in').pathname;
        return { status: 429, body: { message: 'slow down' }, headers: { 'retry-after': '1' } };
      }
      return null;
    };
    try {
      await run(name, trigger(source, [type]), 0);
      const got = delivered(type);
      assert.equal(got.error, null);
      const ids = new Set(got.records.map((r) => r[idField]));
      assert.equal(ids.size, n, 'every record, across the wait');
      const copies = got.records.filter((r) => r[idField] === 'r1');
      assert.equal(copies[copies.length - 1].version, 2, 'the newer copy is delivered last');
      assert.ok(refusedAt !== null, 'the 429 was given');
      const after = vendors.state.requests.filter((r) => r.at > refusedAt && r.path.startsWith(refusedPath.replace(/\/01g-\d+$/, '')));
      assert.ok(after.length > 0 && after[0].at - refusedAt >= 1000, 'retried after Retry-After');

      // Nothing changed since an hour ago: one empty final batch, no error.
      capture.envelopes.length = 0;
      vendors.state.fault = null;
      await run(name, trigger(source, [type], { [type]: iso(Date.now() - HOUR) }), 0);
      const empty = delivered(type);
      assert.equal(empty.batches.length, 1);
      assert.deepEqual(empty.final.records, []);
      assert.equal(empty.error, null);
    } finally {
      vendors.state.hubspotPerSecond = 5;
    }
  });
}
