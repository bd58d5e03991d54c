// Building the page without innerHTML: every value from the API goes in as text, so
// nothing a customer typed can ever run as markup.

/// `h("button", { class: "primary", onclick }, "Save")`: attributes starting with `on` are
/// listeners; `null`, `false` and `undefined` children and attributes are skipped.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

let fieldCounter = 0;

/// A labelled input (or select/textarea when `control` is given). In a table row whose
/// header already says what the input is, `quiet` keeps the label for screen readers only.
export function field(label, attributes = {}, control = "input", { quiet = false } = {}) {
  const id = `field-${++fieldCounter}`;
  const input = h(control, { id, name: attributes.name, ...attributes });
  const caption = h("label", { for: id, class: quiet ? "visually-hidden" : null }, label);
  return { element: h("div", { class: "field" }, caption, input), input };
}

/// A select of `options` ([value, label] pairs), `selected` chosen.
export function select(label, options, selected, attributes = {}, look = {}) {
  const { element, input } = field(label, attributes, "select", look);
  for (const [value, text] of options) {
    input.append(h("option", { value, selected: value === selected }, text));
  }
  return { element, input };
}

const money = new Map();

/// `12.50` in `currency`, as the reader's locale writes it.
export function formatMoney(amount, currency = "USD") {
  if (!money.has(currency)) {
    money.set(currency, new Intl.NumberFormat(undefined, { style: "currency", currency }));
  }
  return money.get(currency).format(Number(amount));
}

export function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

/// How an order is named to people (as in emails and notifications): the last 8 hex digits
/// of its id. (The first ones are a timestamp, shared by orders placed together.)
export const shortId = (id) => id.replaceAll("-", "").slice(-8);

/// A status as a badge; the text carries the meaning, the colour only repeats it.
export const statusBadge = (status) => h("span", { class: `badge status-${status}` }, status.replaceAll("_", " "));
