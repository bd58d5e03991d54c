// What vendors (and admins) do: the live orders board, moving orders through processing →
// shipped (in parcels) → delivered, stalled orders, and the catalogue with its stock.

import { get, patch, post, put } from "../api.js";
import { field, formatMoney, formatTime, h, shortId, statusBadge } from "../dom.js";
import { LiveFeed } from "../live.js";
import { liveIndicator, orderDetail, unitsControls } from "./customer.js";

const COLUMNS = ["pending", "awaiting_payment", "confirmed", "processing", "partially_shipped", "shipped", "delivered", "cancelled"];
const SHIPS_PARCELS = ["processing", "partially_shipped"];
const CANCELLABLE_BY_STAFF = ["pending", "awaiting_payment", "confirmed", "processing"];

/// The buttons that move `order` on from where it is; `done()` runs after a change was accepted.
function moveControls(ctx, order, done) {
  const request = async (change, label) => {
    const accepted = await ctx.busy(() => patch(`/api/orders/${order.id}/status`, change), label);
    if (accepted) {
      ctx.say(`Order ${shortId(order.id)}: ${change.status} requested.`);
      done();
    }
  };
  const controls = h("div", { class: "actions" });
  const status = order.pending_status || order.status;
  if (order.stalled_reason) {
    controls.append(h("p", { class: "error" }, "Stalled: ", order.stalled_reason));
    return controls;
  }
  if (status === "confirmed") {
    controls.append(h("button", { type: "button", class: "primary", onclick: () => request({ status: "processing" }, "Starting…") }, "Start processing"));
  }
  if (SHIPS_PARCELS.includes(status)) {
    const tracking = field(`Tracking number for ${shortId(order.id)}`, { required: true, maxlength: 100 });
    controls.append(
      h("form", {
        class: "inline",
        onsubmit: (event) => {
          event.preventDefault();
          request({ status: "shipped", tracking_number: tracking.input.value.trim() }, "Shipping…");
        },
      }, tracking.element, h("button", { type: "submit", class: "primary" }, status === "processing" ? "Mark shipped" : "Ship the rest")),
    );
  }
  if (status === "shipped") {
    controls.append(h("button", { type: "button", class: "primary", onclick: () => request({ status: "delivered" }, "Recording delivery…") }, "Mark delivered"));
  }
  if (CANCELLABLE_BY_STAFF.includes(status)) {
    controls.append(h("button", { type: "button", class: "danger", onclick: () => request({ status: "cancelled", note: "cancelled by the store" }, "Cancelling…") }, "Cancel"));
  }
  return controls;
}

export async function board(ctx) {
  const pages = await ctx.busy(() => Promise.all(COLUMNS.map((status) => get(`/api/orders?status=${status}&size=25`))));
  if (!pages) return;
  const lists = new Map(COLUMNS.map((status) => [status, h("ul", { class: "cards", "aria-label": `${status} orders` })]));
  const cards = new Map();
  const place = (order) => {
    cards.get(order.id)?.remove();
    const card = h(
      "li",
      { class: "order-card", "data-order": order.id },
      h("a", { href: `#/orders/${order.id}` }, `Order ${shortId(order.id)}`),
      h("div", {}, order.customer_name, " · ", formatMoney(order.total_amount, order.currency)),
      order.tracking_number ? h("div", { class: "muted" }, `Tracking ${order.tracking_number}`) : null,
      h("div", { class: "muted" }, formatTime(order.updated_at)),
      moveControls(ctx, order, () => {}),
    );
    cards.set(order.id, card);
    lists.get(COLUMNS.includes(order.status) ? order.status : "cancelled")?.prepend(card);
  };
  pages.flatMap((page) => page.items).reverse().forEach(place);
  const { indicator, onState } = liveIndicator();
  // Each event names the order; its card is redrawn from the order as it now stands.
  const feed = new LiveFeed(
    "/api/orders/stream",
    async (update) => {
      try {
        place(await get(`/api/orders/${update.order_id}`));
      } catch (error) {
        ctx.say(error.message, "error");
      }
    },
    onState,
  );
  ctx.onLeave(() => feed.close());
  ctx.show(
    "Orders board",
    indicator,
    h("div", { class: "board" }, COLUMNS.map((status) => h("section", { class: "column", "aria-label": status }, h("h2", {}, statusBadge(status)), lists.get(status)))),
  );
}

/// Record money received by hand (or capture what Stripe holds), and refund what was taken
/// (through the queue, like status changes).
function moneyControls(ctx, order, done) {
  const { payment } = order;
  const controls = h("div", { class: "actions" });
  const form = (label, path, fields, body, submit, options) =>
    h("form", {
      class: "inline",
      "aria-label": label,
      onsubmit: async (event) => {
        event.preventDefault();
        if (await ctx.busy(() => post(`/api/orders/${order.id}/${path}`, body(), options), `${label}…`)) {
          ctx.say(`Order ${shortId(order.id)}: ${label.toLowerCase()} requested.`);
          done();
        }
      },
    }, ...fields.map((f) => f.element), h("button", { type: "submit" }, submit));
  const status = order.pending_status || order.status;
  if (payment.provider === "stripe") {
    controls.append(h("p", {}, "Paid by card through Stripe: what is authorised is captured when the order ships."));
    if (Number(payment.amount_authorized) > Number(payment.amount_captured) && status !== "cancelled") {
      controls.append(form("Capture payment", "capture", [], () => ({}), `Capture ${payment.amount_authorized} now`));
    }
  } else if (Number(payment.amount_due) > 0 && status !== "cancelled") {
    const amount = field("Amount received", { required: true, inputmode: "decimal", pattern: "\\d+(\\.\\d{1,2})?", value: payment.amount_due });
    const reference = field("Reference (receipt, transfer)", { maxlength: 100 });
    controls.append(form("Record payment", "payments", [amount, reference],
      () => ({ amount: amount.input.value.trim(), reference: reference.input.value.trim() || undefined }), "Record payment"));
  }
  const refundable = Number(payment.amount_captured) - Number(payment.amount_refunded);
  if (refundable > 0) {
    const amount = field("Amount to refund", { required: true, inputmode: "decimal", pattern: "\\d+(\\.\\d{1,2})?", value: refundable.toFixed(2) });
    const reason = field("Reason for the refund", { maxlength: 1000 });
    controls.append(form("Refund", "refunds", [amount, reason],
      () => ({ amount: amount.input.value.trim(), reason: reason.input.value.trim() || undefined }), "Refund", { idempotent: true }));
  }
  return controls;
}

/// Ship a parcel with some units of the lines chosen (each line's quantity defaults to what
/// is left of it; 0 leaves it out).
function parcelControls(ctx, order, done) {
  const status = order.pending_status || order.status;
  if (!SHIPS_PARCELS.includes(status) || order.stalled_reason) return null;
  const open = order.items.filter((item) => item.quantity > item.quantity_shipped);
  const quantities = open.map((item) => {
    const left = item.quantity - item.quantity_shipped;
    return [item, field(`${item.product_name} (${left} left)`, { type: "number", min: 0, max: left, value: left, required: true })];
  });
  const carrier = field("Carrier", { maxlength: 100 });
  const tracking = field("Parcel tracking number", { required: true, maxlength: 100 });
  return h("form", {
    class: "inline",
    "aria-label": "Ship a parcel",
    onsubmit: async (event) => {
      event.preventDefault();
      const lines = quantities
        .map(([item, quantity]) => ({ item_id: item.id, quantity: Number(quantity.input.value) }))
        .filter((line) => line.quantity > 0);
      const body = { lines, carrier: carrier.input.value.trim() || undefined, tracking_number: tracking.input.value.trim() };
      if (await ctx.busy(() => post(`/api/orders/${order.id}/fulfillments`, body, { idempotent: true }), "Shipping the parcel…")) {
        ctx.say(`Order ${shortId(order.id)}: parcel ${body.tracking_number} requested.`);
        done();
      }
    },
  }, ...quantities.map(([, quantity]) => quantity.element), carrier.element, tracking.element, h("button", { type: "submit" }, "Ship parcel"));
}

/// Record that a parcel on its way arrived.
function parcelDelivery(ctx, order, parcel, done) {
  if (parcel.status !== "shipped") return null;
  return h("button", {
    type: "button",
    onclick: async () => {
      if (await ctx.busy(() => patch(`/api/orders/${order}/fulfillments/${parcel.id}`, { status: "delivered" }), "Recording delivery…")) {
        ctx.say(`Parcel ${parcel.tracking_number}: delivery requested.`);
        done();
      }
    },
  }, `Mark ${parcel.tracking_number} delivered`);
}

export function orderPage(ctx, id) {
  return orderDetail(
    ctx,
    id,
    (order, render) => {
      const controls = moveControls(ctx, order, render);
      const parcel = parcelControls(ctx, order, render);
      if (parcel) controls.append(parcel);
      const units = unitsControls(ctx, order, ["confirmed", ...SHIPS_PARCELS], render);
      if (units) controls.append(units);
      controls.append(moneyControls(ctx, order, render));
      if (order.stalled_reason && ctx.user.role === "admin") controls.append(resolveControls(ctx, order.id, render));
      return controls;
    },
    (parcel, render) => parcelDelivery(ctx, id, parcel, render),
  );
}

/// Re-drive or skip (admins): the API refuses vendors, so they are not offered.
function resolveControls(ctx, id, done) {
  const reason = field(`Why skip the blocking command of ${shortId(id)}`, { maxlength: 500 });
  return h(
    "div",
    { class: "actions" },
    h("button", { type: "button", class: "primary", onclick: async () => { if (await ctx.busy(() => post(`/api/orders/${id}/redrive`), "Re-driving…")) { ctx.say("Re-driven: its commands are published again."); done(); } } }, "Re-drive"),
    h("form", {
      class: "inline",
      onsubmit: async (event) => {
        event.preventDefault();
        if (await ctx.busy(() => post(`/api/orders/${id}/skip`, { reason: reason.input.value.trim() }), "Skipping…")) {
          ctx.say("Skipped: the command is recorded as done without effect.");
          done();
        }
      },
    }, reason.element, h("button", { type: "submit", class: "danger" }, "Skip command")),
  );
}

export async function stalled(ctx) {
  const page = await ctx.busy(() => get("/api/orders?stalled=true&size=100"));
  if (!page) return;
  const reload = () => stalled(ctx);
  const rows = page.items.map((order) =>
    h("li", { class: "card" },
      h("a", { href: `#/orders/${order.id}` }, `Order ${shortId(order.id)}`), " ", statusBadge(order.status),
      h("p", { class: "error" }, order.stalled_reason),
      h("p", { class: "muted" }, `Since ${formatTime(order.stalled_at)}`),
      ctx.user.role === "admin" ? resolveControls(ctx, order.id, reload) : h("p", {}, "An admin can re-drive or skip it."),
    ),
  );
  const { indicator, onState } = liveIndicator();
  const feed = new LiveFeed("/api/orders/stream", (update) => ["stalled", "resumed"].includes(update.kind) && reload(), onState);
  ctx.onLeave(() => feed.close());
  ctx.show(
    "Stalled orders",
    indicator,
    h("p", { class: "muted" }, "An order stalls when its next command was dead-lettered or never arrived; re-drive publishes its commands again, skip records the blocking one as done."),
    rows.length ? h("ul", { class: "list" }, rows) : h("p", {}, "No stalled orders."),
  );
}

export async function products(ctx) {
  const page = await ctx.busy(() => get("/api/products?size=100"));
  if (!page) return;
  const reload = () => products(ctx);
  const rows = page.items.map((product) => {
    const price = field(`Price of ${product.sku}`, { type: "number", step: "0.01", min: "0", value: product.price, class: "short" }, "input", { quiet: true });
    const delta = field(`Stock change for ${product.sku}`, { type: "number", step: "1", value: 0, class: "short" }, "input", { quiet: true });
    return h("tr", {},
      h("td", {}, h("strong", {}, product.name), h("div", { class: "muted" }, product.sku, product.is_active ? "" : " · hidden")),
      h("td", {}, h("form", { class: "inline", onsubmit: async (event) => { event.preventDefault(); if (await ctx.busy(() => put(`/api/products/${product.id}`, { price: price.input.value }), "Saving…")) reload(); } }, price.element, h("button", { type: "submit" }, "Save price"))),
      h("td", { class: "number" }, `${product.stock} (${product.reserved} reserved)`),
      h("td", {}, h("form", { class: "inline", onsubmit: async (event) => { event.preventDefault(); if (await ctx.busy(() => post(`/api/products/${product.id}/stock`, { delta: Number(delta.input.value) }), "Adjusting…")) reload(); } }, delta.element, h("button", { type: "submit" }, "Adjust stock"))),
      h("td", {}, h("button", { type: "button", onclick: async () => { if (await ctx.busy(() => put(`/api/products/${product.id}`, { is_active: !product.is_active }))) reload(); } }, product.is_active ? "Hide" : "Show")),
    );
  });
  const sku = field("SKU", { required: true, maxlength: 64 });
  const name = field("Name", { required: true, maxlength: 200 });
  const description = field("Description", { maxlength: 2000 });
  const price = field("Price", { type: "number", step: "0.01", min: "0", required: true });
  const stock = field("Stock", { type: "number", step: "1", min: "0", value: 0 });
  const create = h("form", {
    class: "card",
    onsubmit: async (event) => {
      event.preventDefault();
      const created = await ctx.busy(() => post("/api/products", {
        sku: sku.input.value.trim(),
        name: name.input.value.trim(),
        description: description.input.value.trim() || undefined,
        price: price.input.value,
        stock: Number(stock.input.value),
      }), "Adding…");
      if (created) reload();
    },
  }, h("h2", {}, "Add a product"), sku.element, name.element, description.element, price.element, stock.element, h("button", { type: "submit", class: "primary" }, "Add product"));
  ctx.show(
    "Products",
    h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Product"), h("th", { scope: "col" }, "Price"), h("th", { scope: "col" }, "Stock"), h("th", { scope: "col" }, "Adjust"), h("th", { scope: "col" }, "Shop"))),
      h("tbody", {}, rows)),
    create,
  );
}
