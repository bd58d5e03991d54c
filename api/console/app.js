// The console's shell: sign-in, the navigation each role gets, hash routing, and the
// helpers every view shares (busy state, messages). Views live in views/*.js.

import { get, register, session, signIn, signOut } from "./api.js";
import { field, h } from "./dom.js";
import * as customer from "./views/customer.js";
import * as staff from "./views/staff.js";
import * as admin from "./views/admin.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const notice = document.getElementById("notice");
const account = document.getElementById("account");

/// What each role sees, in menu order: [hash, label, view].
const MENUS = {
  customer: [
    ["#/shop", "Shop", customer.shop],
    ["#/orders", "My orders", customer.myOrders],
    ["#/notifications", "Notifications", customer.notifications],
  ],
  vendor: [
    ["#/board", "Orders board", staff.board],
    ["#/stalled", "Stalled orders", staff.stalled],
    ["#/products", "Products", staff.products],
    ["#/notifications", "Notifications", customer.notifications],
  ],
  admin: [
    ["#/board", "Orders board", staff.board],
    ["#/stalled", "Stalled orders", staff.stalled],
    ["#/products", "Products", staff.products],
    ["#/users", "Users", admin.users],
    ["#/dead-letters", "Dead letters", admin.deadLetters],
    ["#/webhooks", "Webhooks", admin.webhooks],
    ["#/notifications", "Notifications", customer.notifications],
  ],
};

/// Views with an id in their route: [pattern, view].
const DETAIL_ROUTES = [
  [/^#\/orders\/([0-9a-f-]{36})$/, (ctx, id) => (ctx.user.role === "customer" ? customer.orderPage : staff.orderPage)(ctx, id)],
  [/^#\/webhooks\/([0-9a-f-]{36})$/, admin.webhookPage],
];

let user = null;
let cleanup = [];
// Counts page visits, so a page whose data arrives after the user moved on stays unshown.
let visits = 0;

/// Shown in the notice area (role=status, so screen readers announce it).
function say(text, kind = "info") {
  notice.replaceChildren(text ? h("p", { class: `notice ${kind}` }, text) : "");
}

/// Runs `work`, showing "Loading…" if it takes longer than a blink, and any error in words.
async function busy(work, label = "Loading…") {
  const timer = setTimeout(() => {
    main.setAttribute("aria-busy", "true");
    say(label);
  }, 150);
  try {
    const result = await work();
    say("");
    return result;
  } catch (error) {
    say(error.message, "error");
    return undefined;
  } finally {
    clearTimeout(timer);
    main.removeAttribute("aria-busy");
  }
}

const context = (visit = visits) => ({
  user,
  busy,
  say,
  /// Registers a function to run when the view is left (closing live streams); a view
  /// already left runs it at once.
  onLeave: (fn) => (visit === visits ? cleanup.push(fn) : fn()),
  go: (hash) => {
    location.hash = hash;
  },
  /// Replaces the page's content, with `title` as its heading (focused, so keyboard and
  /// screen reader users land on the new page).
  show: (title, ...content) => {
    if (visit !== visits) return;
    const heading = h("h1", { tabindex: "-1" }, title);
    main.replaceChildren(heading, ...content.flat().filter((part) => part !== null && part !== undefined));
    document.title = `${title} · Orderflow`;
    heading.focus();
  },
});

async function route() {
  const visit = ++visits;
  for (const fn of cleanup) fn();
  cleanup = [];
  say("");
  if (!session()) {
    user = null;
    renderChrome();
    return location.hash === "#/register" ? registerPage() : signInPage();
  }
  if (!user) {
    user = await busy(() => get("/api/auth/me"));
    if (!user) return signInPage();
    if (visit !== visits) return undefined;
  }
  renderChrome();
  const menu = MENUS[user.role] || [];
  const hash = location.hash || menu[0][0];
  for (const [pattern, view] of DETAIL_ROUTES) {
    const match = hash.match(pattern);
    if (match) return view(context(visit), match[1]);
  }
  const entry = menu.find(([path]) => path === hash) || menu[0];
  if (location.hash !== entry[0]) history.replaceState(null, "", entry[0]);
  return entry[2](context(visit));
}

function renderChrome() {
  const menu = user ? MENUS[user.role] || [] : [];
  const current = location.hash;
  nav.replaceChildren(
    ...menu.map(([hash, label]) =>
      h("a", { href: hash, "aria-current": current.startsWith(hash) ? "page" : null }, label),
    ),
  );
  account.replaceChildren(
    user
      ? h(
          "span",
          {},
          h("span", { class: "who" }, `${user.username} (${user.role})`),
          h("button", { type: "button", onclick: async () => { await signOut(); user = null; location.hash = "#/login"; route(); } }, "Sign out"),
        )
      : "",
  );
}

function signInPage() {
  const login = field("Username or email", { autocomplete: "username", required: true });
  const password = field("Password", { type: "password", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    {
      class: "card narrow",
      onsubmit: async (event) => {
        event.preventDefault();
        const signedIn = await busy(() => signIn(login.input.value.trim(), password.input.value), "Signing in…");
        if (signedIn) {
          user = signedIn;
          location.hash = "";
          route();
        }
      },
    },
    login.element,
    password.element,
    h("button", { class: "primary", type: "submit" }, "Sign in"),
    h("p", {}, "New here? ", h("a", { href: "#/register" }, "Create a customer account")),
  );
  context().show("Sign in", form);
}

function registerPage() {
  const email = field("Email", { type: "email", autocomplete: "email", required: true });
  const username = field("Username", { autocomplete: "username", required: true, minlength: 3 });
  const fullName = field("Full name", { autocomplete: "name" });
  const password = field("Password (at least 8 characters)", { type: "password", autocomplete: "new-password", required: true, minlength: 8 });
  const form = h(
    "form",
    {
      class: "card narrow",
      onsubmit: async (event) => {
        event.preventDefault();
        const created = await busy(
          () =>
            register({
              email: email.input.value.trim(),
              username: username.input.value.trim(),
              full_name: fullName.input.value.trim() || undefined,
              password: password.input.value,
            }),
          "Creating your account…",
        );
        if (created) {
          user = created;
          location.hash = "#/shop";
        }
      },
    },
    email.element,
    username.element,
    fullName.element,
    password.element,
    h("button", { class: "primary", type: "submit" }, "Create account"),
    h("p", {}, h("a", { href: "#/login" }, "I have an account")),
  );
  context().show("Create an account", form);
}

window.addEventListener("hashchange", route);
route();
