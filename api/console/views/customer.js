// What customers do: browse the catalogue and place an order, follow their orders live,
// cancel while allowed, read notifications (staff read theirs here too).

import { del, get, post } from "../api.js";
import { field, formatMoney, formatTime, h, shortId, statusBadge } from "../dom.js";
import { LiveFeed } from "../live.js";

/// Statuses a customer may still cancel from.
const CANCELLABLE = ["pending", "awaiting_payment", "confirmed"];

/// The API counts availability up to 20 (never revealing stock levels): 20 means 20 or more.
const AVAILABLE_SHOWN_UP_TO = 20;

function stockText(product) {
  if (!product.in_stock) return "Out of stock";
  return product.available >= AVAILABLE_SHOWN_UP_TO ? `${AVAILABLE_SHOWN_UP_TO}+ in stock` : `${product.available} in stock`;
}

export async function shop(ctx) {
  const catalogue = await ctx.busy(() => get("/api/products?size=100"));
  if (!catalogue) return;
  const quantities = new Map();
  const rows = catalogue.items.map((product) => {
    const quantity = field(`Quantity of ${product.name}`, {
      type: "number",
      min: 0,
      max: product.available,
      value: 0,
      class: "quantity",
      disabled: !product.in_stock,
    }, "input", { quiet: true });
    quantities.set(product, quantity.input);
    return h(
      "tr",
      {},
      h("td", {}, h("strong", {}, product.name), h("div", { class: "muted" }, product.description || "")),
      h("td", { class: "number" }, formatMoney(product.price, product.currency)),
      h("td", { class: "number" }, stockText(product)),
      h("td", {}, quantity.element),
    );
  });
  const name = field("Full name", { autocomplete: "name", required: true, value: ctx.user.full_name || "" });
  const email = field("Email for updates", { type: "email", autocomplete: "email", required: true, value: ctx.user.email });
  const phone = field("Phone (optional)", { type: "tel", autocomplete: "tel" });
  const address = field("Shipping address", { autocomplete: "street-address", required: true, rows: 3 }, "textarea");
  const notes = field("Notes for the store (optional)", { rows: 2 }, "textarea");
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault();
        const items = [...quantities]
          .filter(([, input]) => Number(input.value) > 0)
          .map(([product, input]) => ({ product_id: product.id, quantity: Number(input.value) }));
        if (items.length === 0) return ctx.say("Choose a quantity for at least one product.", "error");
        const order = await ctx.busy(
          () =>
            post(
              "/api/orders",
              {
                items,
                customer_name: name.input.value.trim(),
                customer_email: email.input.value.trim(),
                customer_phone: phone.input.value.trim() || undefined,
                shipping_address: address.input.value.trim(),
                notes: notes.input.value.trim() || undefined,
              },
              { idempotent: true },
            ),
          "Placing your order…",
        );
        if (order) ctx.go(`#/orders/${order.id}`);
      },
    },
    h(
      "table",
      { class: "stack" },
      h("caption", { class: "visually-hidden" }, "Products"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Product"), h("th", { scope: "col" }, "Price"), h("th", { scope: "col" }, "Availability"), h("th", { scope: "col" }, "Quantity"))),
      h("tbody", {}, rows),
    ),
    h("h2", {}, "Shipping"),
    name.element,
    email.element,
    phone.element,
    address.element,
    notes.element,
    h("button", { class: "primary", type: "submit" }, "Place order"),
  );
  ctx.show("Shop", catalogue.items.length ? form : h("p", {}, "Nothing is for sale yet."));
}

/// The connection indicator every live view shows.
export function liveIndicator() {
  const indicator = h("p", { class: "live", role: "status" }, "Connecting…");
  const states = {
    live: "● Live",
    connecting: "Connecting…",
    offline: "Reconnecting…",
    revoked: "Updates stopped: this account may no longer follow them. Sign in again.",
  };
  return { indicator, onState: (state) => (indicator.textContent = states[state]) };
}

export async function myOrders(ctx) {
  const page = await ctx.busy(() => get("/api/orders/my?size=50"));
  if (!page) return;
  const cells = new Map();
  const row = (order) => {
    const status = h("td", {}, statusBadge(order.status));
    cells.set(order.id, status);
    return h(
      "tr",
      {},
      h("td", {}, h("a", { href: `#/orders/${order.id}` }, shortId(order.id))),
      h("td", {}, formatTime(order.created_at)),
      h("td", { class: "number" }, formatMoney(order.total_amount, order.currency)),
      status,
    );
  };
  const body = h("tbody", {}, page.items.map(row));
  const { indicator, onState } = liveIndicator();
  const feed = new LiveFeed(
    "/api/orders/stream",
    async (update) => {
      const cell = cells.get(update.order_id);
      try {
        if (cell) cell.replaceChildren(statusBadge(update.status));
        // An order placed elsewhere (another tab, the API) joins the list.
        else body.prepend(row(await get(`/api/orders/${update.order_id}`)));
        ctx.say(`Order ${shortId(update.order_id)}: ${update.message}`);
      } catch (error) {
        ctx.say(error.message, "error");
      }
    },
    onState,
  );
  ctx.onLeave(() => feed.close());
  ctx.show(
    "My orders",
    indicator,
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Order"), h("th", { scope: "col" }, "Placed"), h("th", { scope: "col" }, "Total"), h("th", { scope: "col" }, "Status"))),
      body,
    ),
    page.items.length ? null : h("p", {}, "No orders yet. ", h("a", { href: "#/shop" }, "Visit the shop")),
  );
}

/// The order's money in a line: its payment status and what was taken, given back and is due.
export function paymentSummary(order) {
  const { payment, currency } = order;
  const parts = [payment.status.replaceAll("_", " ")];
  if (Number(payment.amount_captured) > 0) parts.push(`${formatMoney(payment.amount_captured, currency)} received`);
  if (Number(payment.amount_refunded) > 0) parts.push(`${formatMoney(payment.amount_refunded, currency)} refunded`);
  if (Number(payment.amount_due) > 0) parts.push(`${formatMoney(payment.amount_due, currency)} due`);
  return parts.join(" · ");
}

/// An order's parcels, each with its tracking number, status and lines; `action(parcel)` adds
/// what the viewer may do with one.
function parcelList(order, parcels, action) {
  if (!parcels.length) return null;
  const sku = new Map(order.items.map((item) => [item.id, item.product_name]));
  return h("section", { "aria-label": "Parcels" },
    h("h3", {}, "Parcels"),
    h("ul", { class: "list" }, parcels.map((parcel) =>
      h("li", { "data-parcel": parcel.id },
        statusBadge(parcel.status), " ",
        `${parcel.carrier ? `${parcel.carrier} ` : ""}${parcel.tracking_number}: `,
        parcel.lines.map((line) => `${line.quantity} × ${sku.get(line.item_id) || line.product_name}`).join(", "),
        parcel.delivered_at ? h("span", { class: "muted" }, ` (delivered ${formatTime(parcel.delivered_at)})`) : "",
        " ", action(parcel) || "",
      ))),
  );
}

/// An order's summary, lines, parcels and timeline; `actions(order, render, parcels)` adds
/// what the viewer may do with the order, `parcelAction(parcel, render)` with a parcel.
export async function orderDetail(ctx, id, actions, parcelAction = () => null) {
  const { indicator, onState } = liveIndicator();
  const summary = h("section", { class: "card", "aria-label": "Order" });
  const timeline = h("ol", { class: "timeline" });
  const render = async () => {
    const loaded = await ctx.busy(() => Promise.all([get(`/api/orders/${id}`), get(`/api/orders/${id}/events`), get(`/api/orders/${id}/fulfillments`)]));
    if (!loaded) return;
    const [order, events, { fulfillments: parcels }] = loaded;
    summary.replaceChildren(
      h("dl", { class: "facts" },
        h("dt", {}, "Status"), h("dd", { "data-field": "status" }, statusBadge(order.status), order.pending_status ? ` (becoming ${order.pending_status})` : ""),
        h("dt", {}, "Tracking number"), h("dd", { "data-field": "tracking" }, order.tracking_number || "—"),
        h("dt", {}, "Total"), h("dd", {}, formatMoney(order.total_amount, order.currency)),
        h("dt", {}, "Payment"), h("dd", { "data-field": "payment" }, paymentSummary(order)),
        h("dt", {}, "Ship to"), h("dd", {}, `${order.customer_name}, ${order.shipping_address}`),
        h("dt", {}, "Placed"), h("dd", {}, formatTime(order.created_at)),
        order.stalled_reason ? [h("dt", {}, "Stalled"), h("dd", { class: "error" }, order.stalled_reason)] : null,
      ),
      h("table", {},
        h("caption", {}, "Items"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Product"), h("th", { scope: "col" }, "Quantity"), h("th", { scope: "col" }, "Shipped"), h("th", { scope: "col" }, "Price"))),
        h("tbody", {}, order.items.map((item) => h("tr", {}, h("td", {}, item.product_name), h("td", { class: "number" }, item.quantity), h("td", { class: "number" }, item.quantity_shipped), h("td", { class: "number" }, formatMoney(item.total_price, order.currency))))),
      ),
      parcelList(order, parcels, (parcel) => parcelAction(parcel, render)) || "",
      actions(order, render, parcels) || "",
    );
    timeline.replaceChildren(
      ...events.map((entry) => h("li", {}, h("time", { datetime: entry.created_at }, formatTime(entry.created_at)), " ", entry.message, entry.reason && entry.reason !== entry.message ? h("span", { class: "muted" }, ` (${entry.reason})`) : "")),
    );
  };
  const feed = new LiveFeed(`/api/orders/${id}/stream`, render, onState);
  ctx.onLeave(() => feed.close());
  ctx.show(`Order ${shortId(id)}`, indicator, summary, h("h2", {}, "Timeline"), timeline);
  await render();
}

/// Cancel some units of the lines not yet shipped (each line's field says how many; 0 keeps
/// them), while `statuses` holds the order's.
export function unitsControls(ctx, order, statuses, done) {
  if (!statuses.includes(order.pending_status || order.status) || order.stalled_reason) return null;
  const open = order.items.filter((item) => item.quantity > item.quantity_shipped + item.quantity_cancelled);
  if (!open.length) return null;
  const quantities = open.map((item) => {
    const left = item.quantity - item.quantity_shipped - item.quantity_cancelled;
    return [item, field(`Cancel of ${item.product_name} (${left} left)`, { type: "number", min: 0, max: left, value: 0, required: true })];
  });
  const reason = field("Why cancel these units", { maxlength: 1000 });
  return h("form", {
    class: "inline",
    "aria-label": "Cancel units",
    onsubmit: async (event) => {
      event.preventDefault();
      const lines = quantities
        .map(([item, quantity]) => ({ item_id: item.id, quantity: Number(quantity.input.value) }))
        .filter((line) => line.quantity > 0);
      if (!lines.length) return ctx.say("Choose how many units to cancel.", "error");
      const body = { lines, reason: reason.input.value.trim() || undefined };
      if (await ctx.busy(() => post(`/api/orders/${order.id}/cancellations`, body, { idempotent: true }), "Cancelling units…")) {
        ctx.say(`Order ${shortId(order.id)}: cancellation of ${lines.length} line(s) requested.`);
        done();
      }
    },
  }, ...quantities.map(([, quantity]) => quantity.element), reason.element, h("button", { type: "submit", class: "danger" }, "Cancel units"));
}

export function orderPage(ctx, id) {
  return orderDetail(ctx, id, (order, render) => [
    unitsControls(ctx, order, ["confirmed"], render),
    CANCELLABLE.includes(order.pending_status || order.status)
      ? h("button", {
          type: "button",
          class: "danger",
          onclick: async () => {
            if (await ctx.busy(() => del(`/api/orders/${id}`), "Asking to cancel…")) {
              ctx.say("Cancellation requested.");
              render();
            }
          },
        }, "Cancel order")
      : null,
  ]);
}

export async function notifications(ctx) {
  const page = await ctx.busy(() => get("/api/notifications?size=50"));
  if (!page) return;
  const list = h(
    "ul",
    { class: "list" },
    page.items.map((note) =>
      h("li", { class: note.read_at ? "read" : "unread" },
        h("time", { datetime: note.created_at }, formatTime(note.created_at)), " ", note.message, " ",
        note.order_id ? h("a", { href: `#/orders/${note.order_id}` }, "View order") : "", " ",
        note.read_at ? "" : h("button", { type: "button", onclick: async () => { if (await ctx.busy(() => post(`/api/notifications/${note.id}/read`)) !== undefined) notifications(ctx); } }, "Mark read"),
      ),
    ),
  );
  ctx.show(
    "Notifications",
    h("button", { type: "button", onclick: async () => { if (await ctx.busy(() => post("/api/notifications/read-all")) !== undefined) notifications(ctx); } }, "Mark all read"),
    page.items.length ? list : h("p", {}, "No notifications."),
  );
}
