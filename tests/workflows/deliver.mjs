// Runs one shipped workflow for a trigger syncbridge really sent (JSON on stdin) against the
// vendor stand-ins, filled with copies of the source's sample records (tests/fixtures/samples),
// so its batches go to the real syncbridge at the trigger's callback_url with SYNCBRIDGE_KEY.
// Used by tests/api/n8n_templates.rs: `node tests/workflows/deliver.mjs <workflow> [count]`.
// HubSpot deals are associated with the company of domain acme-logistics.com.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { runWorkflow } from './n8n.mjs';
import { startStandIns } from './stand-ins.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const [name, countArg] = process.argv.slice(2);
const count = Number(countArg ?? 120);
const body = JSON.parse(readFileSync(0, 'utf8'));

// The stand-in collection, the sample file and the id field of each source's data types.
const COLLECTIONS = {
  hubspot: { contacts: ['hubspot:contacts', 'hubspot_contacts', 'id'], deals: ['hubspot:deals', 'hubspot_deals', 'id'] },
  zoho_crm: { contacts: ['zoho_crm:Contacts', 'zoho_crm_contacts', 'id'], deals: ['zoho_crm:Deals', 'zoho_crm_deals', 'id'] },
  zoho_desk: { tickets: ['zoho_desk:tickets', 'zoho_desk_tickets', 'id'] },
  jira: { tickets: ['jira:issues', 'jira_tickets', 'id'] },
  salesforce: { deals: ['salesforce:Opportunity', 'salesforce_deals', 'Id'] },
};

const vendors = await startStandIns();
try {
  const now = Date.now();
  for (const [type, [collection, sample, idField]] of Object.entries(COLLECTIONS[body.source_type])) {
    const samples = JSON.parse(readFileSync(join(root, 'tests', 'fixtures', 'samples', `${sample}.json`), 'utf8')).records;
    vendors.state.source[collection] = Array.from({ length: count }, (_, i) => {
      const record = structuredClone(samples[i % samples.length]);
      record[idField] = `${record[idField]}-${i}`;
      // What the workflow must look up itself.
      delete record.company_domain;
      if (type === 'deals' && body.source_type === 'hubspot') vendors.state.dealCompany.set(record.id, '77');
      return { modified: now - (count - i) * 1000, record };
    });
  }
  vendors.state.companies.set('77', { domain: 'acme-logistics.com', name: 'Acme Logistics' });
  const { requests } = await runWorkflow(JSON.parse(readFileSync(join(root, 'examples', 'n8n', `${name}.json`), 'utf8')), {
    body,
    rewrite: vendors.rewrite,
    credentials: { httpHeaderAuth: { name: 'Authorization', value: `Bearer ${process.env.SYNCBRIDGE_KEY}` } },
    timeScale: 0.01,
  });
  const failed = requests.filter((r) => r.status >= 300 && !r.url.includes('/api/webhooks/'));
  const refused = requests.filter((r) => r.url.includes('/api/webhooks/') && r.status >= 300);
  console.log(JSON.stringify({ requests: requests.length, failed: failed.length, refused }));
  process.exitCode = refused.length ? 1 : 0;
} finally {
  await vendors.close();
}
