// What admins do besides the staff views: users (search, role, deactivate), dead letters,
// and webhook endpoints with their delivery log.

import { del, get, post, put } from "../api.js";
import { field, formatTime, h, select, shortId } from "../dom.js";

const ROLES = [["customer", "customer"], ["vendor", "vendor"], ["admin", "admin"]];
const EVENT_TYPES = [
  "order.created", "order.status_changed", "order.cancelled", "order.paid", "order.refunded",
  "order.payment_authorized", "order.payment_failed", "order.payment_voided",
];

export async function users(ctx, query = "") {
  const page = await ctx.busy(() => get(query ? `/api/users/search?q=${encodeURIComponent(query)}&size=50` : "/api/users?size=50"));
  if (!page) return;
  const search = field("Search by name, username or email", { type: "search", value: query });
  const reload = () => users(ctx, search.input.value.trim());
  const rows = page.items.map((user) => {
    const role = select(`Role of ${user.username}`, ROLES, user.role, {}, { quiet: true });
    return h("tr", {},
      h("td", {}, h("strong", {}, user.username), h("div", { class: "muted" }, user.email)),
      h("td", {}, h("form", { class: "inline", onsubmit: async (event) => { event.preventDefault(); if (await ctx.busy(() => put(`/api/users/${user.id}`, { role: role.input.value }), "Saving…")) reload(); } }, role.element, h("button", { type: "submit" }, "Save role"))),
      h("td", {}, user.is_active ? "active" : "deactivated"),
      h("td", {}, user.id === ctx.user.id ? "you" : user.is_active
        ? h("button", { type: "button", class: "danger", onclick: async () => { if (await ctx.busy(() => del(`/api/users/${user.id}`), "Deactivating…") !== undefined) reload(); } }, "Deactivate")
        : h("button", { type: "button", onclick: async () => { if (await ctx.busy(() => put(`/api/users/${user.id}`, { is_active: true }), "Reactivating…")) reload(); } }, "Reactivate")),
    );
  });
  ctx.show(
    "Users",
    h("form", { class: "inline", role: "search", onsubmit: (event) => { event.preventDefault(); reload(); } }, search.element, h("button", { type: "submit" }, "Search")),
    h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "User"), h("th", { scope: "col" }, "Role"), h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Action"))),
      h("tbody", {}, rows)),
    h("p", { class: "muted" }, `${page.total} in all.`),
  );
}

/// Shows a signing secret once, with the reason it is shown only now.
function showSecret(ctx, secret) {
  ctx.say("");
  return h("div", { class: "card secret", role: "alert" },
    h("p", {}, "The signing secret is shown only now. Store it where the receiver can read it:"),
    h("code", {}, secret));
}

export async function webhooks(ctx, revealed = null) {
  const page = await ctx.busy(() => get("/api/webhooks?size=50"));
  if (!page) return;
  const reload = (secret) => webhooks(ctx, secret);
  const url = field("Receiver URL (https)", { type: "url", required: true });
  const description = field("Description", { maxlength: 200 });
  const types = EVENT_TYPES.map((type) => {
    const box = field(type, { type: "checkbox", checked: true });
    box.element.classList.add("check");
    return [type, box];
  });
  const create = h("form", {
    class: "card",
    onsubmit: async (event) => {
      event.preventDefault();
      const created = await ctx.busy(() => post("/api/webhooks", {
        url: url.input.value.trim(),
        description: description.input.value.trim() || undefined,
        event_types: types.filter(([, box]) => box.input.checked).map(([type]) => type),
      }), "Adding…");
      if (created) reload(created.secret);
    },
  }, h("h2", {}, "Add an endpoint"), url.element, description.element, h("fieldset", {}, h("legend", {}, "Events"), types.map(([, box]) => box.element)), h("button", { type: "submit", class: "primary" }, "Add endpoint"));
  const rows = page.items.map((endpoint) => h("tr", {},
    h("td", {}, h("a", { href: `#/webhooks/${endpoint.id}` }, endpoint.url), h("div", { class: "muted" }, endpoint.description)),
    h("td", {}, endpoint.enabled ? "enabled" : `disabled${endpoint.disabled_reason ? `: ${endpoint.disabled_reason}` : ""}`, endpoint.failing_since ? h("div", { class: "error" }, `failing since ${formatTime(endpoint.failing_since)}`) : ""),
    h("td", {}, endpoint.event_types.length ? endpoint.event_types.join(", ") : "all"),
    h("td", { class: "actions" },
      h("button", { type: "button", onclick: async () => { if (await ctx.busy(() => put(`/api/webhooks/${endpoint.id}`, { enabled: !endpoint.enabled }))) reload(); } }, endpoint.enabled ? "Disable" : "Enable"),
      h("button", { type: "button", onclick: async () => { const rotated = await ctx.busy(() => post(`/api/webhooks/${endpoint.id}/rotate-secret`)); if (rotated) reload(rotated.secret); } }, "Rotate secret"),
      h("button", { type: "button", class: "danger", onclick: async () => { if (confirm(`Delete the endpoint ${endpoint.url}?`) && (await ctx.busy(() => del(`/api/webhooks/${endpoint.id}`))) !== undefined) reload(); } }, "Delete"),
    ),
  ));
  ctx.show(
    "Webhooks",
    revealed ? showSecret(ctx, revealed) : null,
    rows.length
      ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Endpoint"), h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Events"), h("th", { scope: "col" }, "Actions"))), h("tbody", {}, rows))
      : h("p", {}, "No endpoints yet."),
    create,
  );
}

export async function webhookPage(ctx, id, status = "") {
  const loaded = await ctx.busy(() => Promise.all([get(`/api/webhooks/${id}`), get(`/api/webhooks/${id}/deliveries?size=50${status ? `&status=${status}` : ""}`)]));
  if (!loaded) return;
  const [endpoint, deliveries] = loaded;
  const filter = select("Show", [["", "all deliveries"], ["pending", "pending"], ["succeeded", "succeeded"], ["failed", "failed"]], status, { onchange: (event) => webhookPage(ctx, id, event.target.value) });
  const rows = deliveries.items.map((delivery) => h("li", { class: "card" },
    h("strong", {}, delivery.event_type), ` · order ${shortId(delivery.order_id)} · ${delivery.status} · ${delivery.attempts} attempt(s)`,
    delivery.next_attempt_at ? h("div", { class: "muted" }, `Next attempt ${formatTime(delivery.next_attempt_at)}`) : null,
    h("ul", { class: "attempts" }, delivery.attempt_log.map((attempt) => h("li", {},
      formatTime(attempt.attempted_at), " — ", attempt.error || `HTTP ${attempt.response_status}`, ` in ${attempt.latency_ms} ms`,
      attempt.response_excerpt ? h("code", { class: "excerpt" }, attempt.response_excerpt) : null))),
    h("button", { type: "button", onclick: async () => { if (await ctx.busy(() => post(`/api/webhooks/${id}/deliveries/${delivery.event_id}/resend`), "Resending…") !== undefined) webhookPage(ctx, id, status); } }, "Resend"),
  ));
  ctx.show(
    `Deliveries to ${endpoint.url}`,
    h("p", {}, h("a", { href: "#/webhooks" }, "← All endpoints")),
    h("div", { class: "inline" }, filter.element,
      h("button", { type: "button", onclick: async () => { const since = new Date(Date.now() - 7 * 86400000).toISOString(); if (await ctx.busy(() => post(`/api/webhooks/${id}/deliveries/resend-failed`, { since }), "Resending…") !== undefined) webhookPage(ctx, id, status); } }, "Resend failed (last 7 days)")),
    rows.length ? h("ul", { class: "list" }, rows) : h("p", {}, "No deliveries."),
  );
}

export async function deadLetters(ctx) {
  const letters = await ctx.busy(() => get("/api/dead-letters?limit=200"));
  if (!letters) return;
  const redrive = async (body, label) => {
    const result = await ctx.busy(() => post("/api/dead-letters/redrive", body), label);
    if (result) {
      await deadLetters(ctx);
      ctx.say(`${result.redriven} letter(s) handed back to the workers.`);
    }
  };
  const rows = letters.map((letter) => h("li", { class: "card" },
    h("strong", {}, letter.routing_key), " · ", h("code", {}, letter.message_id || "no message id"),
    h("p", { class: "error" }, letter.error || "no reason recorded"),
    h("code", { class: "excerpt" }, letter.body.length > 400 ? `${letter.body.slice(0, 400)}…` : letter.body),
    letter.message_id ? h("button", { type: "button", onclick: () => redrive({ message_ids: [letter.message_id] }, "Re-driving…") }, "Re-drive") : null,
  ));
  ctx.show(
    "Dead letters",
    h("p", { class: "muted" }, "Messages the workers could not apply, oldest first. They stay in the queue until re-driven; a command's order is also flagged stalled."),
    rows.length ? [h("button", { type: "button", class: "primary", onclick: () => redrive({ all: true }, "Re-driving…") }, "Re-drive all"), h("ul", { class: "list" }, rows)] : h("p", {}, "No dead letters."),
  );
}
