-- The platform API reads the three external tables through one view: the columns they share,
-- the email and domain a record is searched by, the type's own typed columns as one object, and
-- `properties` and `raw`. security_invoker: the caller's row level security applies. Each branch
-- has a constant data_type, so a query naming one type runs only its table's branch.
CREATE VIEW api_records WITH (security_invoker = true) AS
    SELECT 'contacts'::text AS data_type, c.id, c.tenant_id, c.integration_id, c.external_id,
           c.account_id, c.match_method, c.match_reason, c.email, c.email_domain AS domain,
           jsonb_build_object('email', c.email, 'email_domain', c.email_domain,
               'first_name', c.first_name, 'last_name', c.last_name, 'full_name', c.full_name,
               'phone', c.phone, 'title', c.title, 'company_name', c.company_name,
               'lifecycle_stage', c.lifecycle_stage, 'source_created_at', c.source_created_at,
               'source_updated_at', c.source_updated_at) AS fields,
           c.properties, c.raw, c.last_sync_log_id, c.deleted_at, c.last_synced_at,
           c.created_at, c.updated_at
    FROM external_contacts c
    UNION ALL
    SELECT 'tickets', t.id, t.tenant_id, t.integration_id, t.external_id, t.account_id,
           t.match_method, t.match_reason, t.requester_email, t.requester_domain,
           jsonb_build_object('ticket_number', t.ticket_number, 'subject', t.subject,
               'description', t.description, 'status', t.status, 'priority', t.priority,
               'ticket_type', t.ticket_type, 'channel', t.channel,
               'requester_email', t.requester_email, 'requester_domain', t.requester_domain,
               'requester_name', t.requester_name, 'assignee', t.assignee,
               'opened_at', t.opened_at, 'closed_at', t.closed_at, 'due_at', t.due_at,
               'source_created_at', t.source_created_at, 'source_updated_at', t.source_updated_at),
           t.properties, t.raw, t.last_sync_log_id, t.deleted_at, t.last_synced_at,
           t.created_at, t.updated_at
    FROM external_tickets t
    UNION ALL
    SELECT 'deals', d.id, d.tenant_id, d.integration_id, d.external_id, d.account_id,
           d.match_method, d.match_reason, d.contact_email, d.company_domain,
           jsonb_build_object('name', d.name, 'amount', d.amount, 'currency', d.currency,
               'stage', d.stage, 'pipeline', d.pipeline, 'probability', d.probability,
               'close_date', d.close_date, 'is_closed', d.is_closed, 'is_won', d.is_won,
               'deal_type', d.deal_type, 'owner_name', d.owner_name, 'owner_email', d.owner_email,
               'company_name', d.company_name, 'company_domain', d.company_domain,
               'contact_email', d.contact_email, 'source_created_at', d.source_created_at,
               'source_updated_at', d.source_updated_at),
           d.properties, d.raw, d.last_sync_log_id, d.deleted_at, d.last_synced_at,
           d.created_at, d.updated_at
    FROM external_deals d;
GRANT SELECT ON api_records TO syncbridge_app, syncbridge_system;

-- Records are paged by (updated_at, id) within a tenant: what changed since a point, in order.
CREATE INDEX external_contacts_updated_idx ON external_contacts (tenant_id, updated_at, id);
CREATE INDEX external_tickets_updated_idx ON external_tickets (tenant_id, updated_at, id);
CREATE INDEX external_deals_updated_idx ON external_deals (tenant_id, updated_at, id);
