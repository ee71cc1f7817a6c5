//! Built-in mappings per source system and data type, so a new integration works with no mapping
//! rows; stored mappings override them per target. Shapes follow `tests/fixtures/samples/` (the
//! sources' own API formats); any other combination maps well-known names one to one.

use serde_json::{Value, json};

use super::columns;
use crate::domain::{DataType, SourceType};

fn from(source: &str) -> Value {
    json!({ "source": source })
}

fn with(source: &str, ops: Value) -> Value {
    json!({ "source": source, "ops": ops })
}

fn email(source: &str) -> Value {
    with(source, json!([{"op": "trim"}, {"op": "lowercase"}]))
}

fn id(source: &str) -> Value {
    with(source, json!([{"op": "to_string"}, {"op": "required"}]))
}

fn set(entries: Vec<(&str, Value)>) -> Vec<(String, Value)> {
    entries
        .into_iter()
        .map(|(t, v)| (t.to_string(), v))
        .collect()
}

/// The preset mappings (target, mapping) of a source and data type.
pub fn preset(source: SourceType, data_type: DataType) -> Vec<(String, Value)> {
    use DataType::*;
    use SourceType::*;
    match (source, data_type) {
        (Hubspot, Contacts) => set(vec![
            ("external_id", id("id")),
            ("email", email("properties.email")),
            ("first_name", from("properties.firstname")),
            ("last_name", from("properties.lastname")),
            (
                "full_name",
                json!({"source": "properties.firstname", "ops": [
                {"op": "concat", "paths": ["properties.lastname"], "separator": " "}]}),
            ),
            ("phone", from("properties.phone")),
            ("title", from("properties.jobtitle")),
            ("company_name", from("properties.company")),
            ("lifecycle_stage", from("properties.lifecyclestage")),
            (
                "source_created_at",
                with(
                    "properties.createdate",
                    json!([
                {"op": "coalesce", "paths": ["createdAt"]}, {"op": "date"}]),
                ),
            ),
            (
                "source_updated_at",
                with(
                    "properties.lastmodifieddate",
                    json!([
                {"op": "coalesce", "paths": ["updatedAt"]}, {"op": "date"}]),
                ),
            ),
            // Archived HubSpot records are deleted there: skipped here, not failed.
            (
                "properties.archived",
                with("archived", json!([{"op": "skip_if", "equals": true}])),
            ),
        ]),
        (Hubspot, Deals) => set(vec![
            ("external_id", id("id")),
            ("name", from("properties.dealname")),
            // HubSpot sends every property as a string ("48000", "" for none).
            (
                "amount",
                with("properties.amount", json!([{"op": "to_number"}])),
            ),
            ("currency", from("properties.deal_currency_code")),
            ("stage", from("properties.dealstage")),
            ("pipeline", from("properties.pipeline")),
            (
                "close_date",
                with("properties.closedate", json!([{"op": "date"}])),
            ),
            (
                "is_closed",
                with("properties.hs_is_closed", json!([{"op": "to_bool"}])),
            ),
            (
                "is_won",
                with("properties.hs_is_closed_won", json!([{"op": "to_bool"}])),
            ),
            ("deal_type", from("properties.dealtype")),
            ("company_domain", from("company_domain")),
            ("contact_email", email("contact_email")),
            (
                "source_created_at",
                with(
                    "properties.createdate",
                    json!([
                {"op": "coalesce", "paths": ["createdAt"]}, {"op": "date"}]),
                ),
            ),
            (
                "source_updated_at",
                with(
                    "properties.hs_lastmodifieddate",
                    json!([
                {"op": "coalesce", "paths": ["updatedAt"]}, {"op": "date"}]),
                ),
            ),
            ("properties.owner_id", from("properties.hubspot_owner_id")),
            (
                "properties.archived",
                with("archived", json!([{"op": "skip_if", "equals": true}])),
            ),
        ]),
        (ZohoCrm, Contacts) => set(vec![
            ("external_id", id("id")),
            ("email", email("Email")),
            ("first_name", from("First_Name")),
            ("last_name", from("Last_Name")),
            ("full_name", from("Full_Name")),
            ("phone", from("Phone")),
            ("title", from("Title")),
            // Zoho lookups are objects {name, id}.
            ("company_name", from("Account_Name.name")),
            ("lifecycle_stage", from("Lead_Source")),
            (
                "source_created_at",
                with("Created_Time", json!([{"op": "date"}])),
            ),
            (
                "source_updated_at",
                with("Modified_Time", json!([{"op": "date"}])),
            ),
            ("properties.account_id", from("Account_Name.id")),
            ("properties.owner_email", from("Owner.email")),
            ("properties.email_opt_out", from("Email_Opt_Out")),
            ("properties.tags", from("Tag")),
        ]),
        (ZohoCrm, Deals) => set(vec![
            ("external_id", id("id")),
            ("name", from("Deal_Name")),
            ("amount", with("Amount", json!([{"op": "to_number"}]))),
            ("currency", from("Currency")),
            ("stage", from("Stage")),
            (
                "probability",
                with("Probability", json!([{"op": "to_number"}])),
            ),
            ("close_date", with("Closing_Date", json!([{"op": "date"}]))),
            (
                "is_closed",
                with(
                    "Stage",
                    json!([{"op": "enum_map", "case_insensitive": true,
                "map": {"closed won": true, "closed lost": true},
                "on_unmapped": "default", "default": false}]),
                ),
            ),
            (
                "is_won",
                with(
                    "Stage",
                    json!([{"op": "enum_map", "case_insensitive": true,
                "map": {"closed won": true}, "on_unmapped": "default", "default": false}]),
                ),
            ),
            ("deal_type", from("Type")),
            ("owner_name", from("Owner.name")),
            ("owner_email", email("Owner.email")),
            ("company_name", from("Account_Name.name")),
            (
                "source_created_at",
                with("Created_Time", json!([{"op": "date"}])),
            ),
            (
                "source_updated_at",
                with("Modified_Time", json!([{"op": "date"}])),
            ),
            ("properties.contact_name", from("Contact_Name.name")),
            ("properties.account_id", from("Account_Name.id")),
        ]),
        (ZohoDesk, Tickets) => set(vec![
            ("external_id", id("id")),
            (
                "ticket_number",
                with("ticketNumber", json!([{"op": "to_string"}])),
            ),
            ("subject", from("subject")),
            ("description", from("description")),
            ("status", from("status")),
            ("priority", from("priority")),
            ("channel", from("channel")),
            ("requester_email", email("email")),
            ("assignee", with("assigneeId", json!([{"op": "to_string"}]))),
            ("opened_at", with("createdTime", json!([{"op": "date"}]))),
            ("closed_at", with("closedTime", json!([{"op": "date"}]))),
            ("due_at", with("dueDate", json!([{"op": "date"}]))),
            (
                "source_created_at",
                with("createdTime", json!([{"op": "date"}])),
            ),
            (
                "source_updated_at",
                with("modifiedTime", json!([{"op": "date"}])),
            ),
            ("properties.status_type", from("statusType")),
            ("properties.severity", from("cf.cf_severity")),
            ("properties.account_id", from("accountId")),
        ]),
        (Jira, Tickets) => set(vec![
            ("external_id", id("id")),
            ("ticket_number", from("key")),
            ("subject", from("fields.summary")),
            ("status", from("fields.status.name")),
            ("priority", from("fields.priority.name")),
            ("ticket_type", from("fields.issuetype.name")),
            ("requester_email", email("fields.reporter.emailAddress")),
            ("requester_name", from("fields.reporter.displayName")),
            ("assignee", from("fields.assignee.displayName")),
            // Jira writes offsets without a colon (+0000).
            ("opened_at", with("fields.created", json!([{"op": "date"}]))),
            (
                "closed_at",
                with("fields.resolutiondate", json!([{"op": "date"}])),
            ),
            ("due_at", with("fields.duedate", json!([{"op": "date"}]))),
            (
                "source_created_at",
                with("fields.created", json!([{"op": "date"}])),
            ),
            (
                "source_updated_at",
                with("fields.updated", json!([{"op": "date"}])),
            ),
            ("properties.labels", from("fields.labels")),
            (
                "properties.status_category",
                from("fields.status.statusCategory.key"),
            ),
        ]),
        (Salesforce, Deals) => set(vec![
            ("external_id", id("Id")),
            ("name", from("Name")),
            ("amount", with("Amount", json!([{"op": "to_number"}]))),
            ("currency", from("CurrencyIsoCode")),
            ("stage", from("StageName")),
            (
                "probability",
                with("Probability", json!([{"op": "to_number"}])),
            ),
            // A date without time.
            (
                "close_date",
                with(
                    "CloseDate",
                    json!([{"op": "date", "formats": ["date", "rfc3339"]}]),
                ),
            ),
            ("is_closed", with("IsClosed", json!([{"op": "to_bool"}]))),
            ("is_won", with("IsWon", json!([{"op": "to_bool"}]))),
            ("deal_type", from("Type")),
            ("owner_name", from("Owner.Name")),
            ("owner_email", email("Owner.Email")),
            ("company_name", from("Account.Name")),
            ("company_domain", from("Account.Website")),
            (
                "source_created_at",
                with("CreatedDate", json!([{"op": "date"}])),
            ),
            (
                "source_updated_at",
                with("LastModifiedDate", json!([{"op": "date"}])),
            ),
            ("properties.account_id", from("AccountId")),
        ]),
        (Zendesk, Tickets) => set(vec![
            ("external_id", id("id")),
            ("ticket_number", with("id", json!([{"op": "to_string"}]))),
            ("subject", from("subject")),
            ("description", from("description")),
            ("status", from("status")),
            ("priority", from("priority")),
            ("ticket_type", from("type")),
            ("channel", from("via.channel")),
            // Zendesk sends only requester_id; workflows add requester_email when they can.
            ("requester_email", email("requester_email")),
            (
                "assignee",
                with("assignee_id", json!([{"op": "to_string"}])),
            ),
            ("opened_at", with("created_at", json!([{"op": "date"}]))),
            (
                "source_created_at",
                with("created_at", json!([{"op": "date"}])),
            ),
            (
                "source_updated_at",
                with("updated_at", json!([{"op": "date"}])),
            ),
            ("properties.tags", from("tags")),
            ("properties.requester_id", from("requester_id")),
            ("properties.organization_id", from("organization_id")),
        ]),
        (Intercom, Contacts) => set(vec![
            ("external_id", id("id")),
            ("email", email("email")),
            ("full_name", from("name")),
            (
                "first_name",
                with(
                    "name",
                    json!([{"op": "split", "separator": " ", "index": 0}]),
                ),
            ),
            (
                "last_name",
                with(
                    "name",
                    json!([{"op": "regex_extract", "pattern": "^\\S+\\s+(.+)$"}]),
                ),
            ),
            ("phone", from("phone")),
            ("title", from("role")),
            // Intercom dates are epoch seconds.
            (
                "source_created_at",
                with(
                    "created_at",
                    json!([{"op": "date", "formats": ["epoch_s"]}]),
                ),
            ),
            (
                "source_updated_at",
                with(
                    "updated_at",
                    json!([{"op": "date", "formats": ["epoch_s"]}]),
                ),
            ),
            ("properties.external_id", from("external_id")),
            ("properties.plan", from("custom_attributes.plan")),
            (
                "properties.last_seen_at",
                with(
                    "last_seen_at",
                    json!([{"op": "date", "formats": ["epoch_s"]}]),
                ),
            ),
        ]),
        _ => identity(data_type),
    }
}

/// Custom sources (and combinations without a preset): each column from the key of its own name.
pub fn identity(data_type: DataType) -> Vec<(String, Value)> {
    let mut out = vec![(
        "external_id".to_string(),
        json!({"source": "external_id", "ops": [
            {"op": "coalesce", "paths": ["id"]}, {"op": "to_string"}, {"op": "required"}]}),
    )];
    for (column, _) in columns(data_type) {
        let mapping = if column.ends_with("email") {
            email(column)
        } else {
            from(column)
        };
        out.push((column.to_string(), mapping));
    }
    out
}
