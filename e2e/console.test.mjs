// The console in a real browser: a customer places an order on a phone-sized screen while
// a vendor's board is open in another browser context; the board shows the new order
// without a reload; the vendor ships it; the customer's page shows `shipped` and the
// tracking number without a reload; once delivered, the vendor records the cash and refunds
// it on the order's page. Every page visited is checked with axe-core.
//
// Run by the Rust test `console::a_customer_and_a_vendor_work_side_by_side_in_a_real_browser`,
// which starts the system and the users; settings come from the environment.

import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("BASE_URL");
const password = env("PASSWORD");
const shots = env("SCREENSHOTS");
const tracking = "TRK-E2E-0042";
const WAIT = { timeout: 15000 };
mkdirSync(shots, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Without the background-networking flags Chromium keeps calling out to the internet.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const failures = [];

/// Serious or critical accessibility violations on the page as it stands.
async function audit(page, name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => ["serious", "critical"].includes(v.impact));
  for (const violation of bad) {
    failures.push(`${name}: ${violation.id} (${violation.impact}): ${violation.help} — ${violation.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  }
  console.log(`axe ${name}: ${result.violations.length} violations, ${bad.length} serious or critical`);
}

async function signIn(page, login) {
  await page.goto(`${base}/console/`);
  await page.getByLabel("Username or email").fill(login);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor(WAIT);
  // A reload would wipe this; its survival proves the updates came without one.
  await page.evaluate(() => (window.neverReloaded = true));
}

const live = (page) => page.getByRole("status").filter({ hasText: "● Live" }).first().waitFor(WAIT);

try {
  // bypassCSP lets the test inject axe-core; the console itself runs under its strict CSP.
  const vendorContext = await browser.newContext({ viewport: { width: 1280, height: 900 }, bypassCSP: true });
  const customerContext = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, bypassCSP: true });
  const vendor = await vendorContext.newPage();
  const customer = await customerContext.newPage();
  for (const page of [vendor, customer]) page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));

  await signIn(vendor, env("VENDOR"));
  await vendor.getByRole("heading", { name: "Orders board" }).waitFor(WAIT);
  await live(vendor);
  await audit(vendor, "orders board");

  await signIn(customer, env("CUSTOMER"));
  await customer.getByRole("heading", { name: "Shop" }).waitFor(WAIT);
  await audit(customer, "shop");
  await customer.getByLabel(`Quantity of ${env("PRODUCT_NAME")}`).fill("2");
  await customer.getByLabel("Full name").fill("Alice Example");
  await customer.getByLabel("Shipping address").fill("1 Long Road, Springfield");
  await customer.screenshot({ path: `${shots}/customer-shop.png`, fullPage: true });
  await customer.getByRole("button", { name: "Place order" }).click();
  await customer.getByRole("heading", { name: /^Order / }).waitFor(WAIT);
  await live(customer);
  const orderId = customer.url().split("/").pop();
  const short = orderId.replaceAll("-", "").slice(-8);
  console.log(`order ${orderId} placed`);

  // The vendor's board shows it, confirmed by a worker, without a reload.
  const confirmedColumn = vendor.getByRole("region", { name: "confirmed" });
  const card = () => vendor.locator(`li[data-order="${orderId}"]`);
  await confirmedColumn.getByRole("link", { name: `Order ${short}` }).waitFor(WAIT);
  await vendor.screenshot({ path: `${shots}/vendor-board.png`, fullPage: true });
  await card().getByRole("button", { name: "Start processing" }).click();
  await vendor.getByRole("region", { name: "processing" }).getByRole("link", { name: `Order ${short}` }).waitFor(WAIT);

  // On the order's page the vendor ships one of the two units in a first parcel, then the
  // rest; the customer's page follows each parcel, without a reload.
  await card().getByRole("link", { name: `Order ${short}` }).click();
  await vendor.getByRole("heading", { name: `Order ${short}` }).waitFor(WAIT);
  const parcelForm = vendor.getByRole("form", { name: "Ship a parcel" });
  await parcelForm.getByLabel(`${env("PRODUCT_NAME")} (2 left)`).fill("1");
  await parcelForm.getByLabel("Carrier").fill("DHL");
  await parcelForm.getByLabel("Parcel tracking number").fill(`${tracking}-A`);
  await parcelForm.getByRole("button", { name: "Ship parcel" }).click();
  await vendor.locator('[data-field="status"]').filter({ hasText: "partially shipped" }).waitFor(WAIT);
  await customer.locator("[data-parcel]").filter({ hasText: `${tracking}-A` }).waitFor(WAIT);
  await vendor.getByLabel(`Tracking number for ${short}`).fill(tracking);
  await vendor.getByRole("button", { name: "Ship the rest" }).click();
  await vendor.locator('[data-field="status"]').filter({ hasText: /^shipped/ }).waitFor(WAIT);
  await customer.locator('[data-field="status"]').filter({ hasText: /^shipped/ }).waitFor(WAIT);
  await customer.locator('[data-field="tracking"]').filter({ hasText: tracking }).waitFor(WAIT);
  await customer.locator("[data-parcel]").filter({ hasText: tracking }).nth(1).waitFor(WAIT);
  for (const [name, page] of [["vendor", vendor], ["customer", customer]]) {
    if (!(await page.evaluate(() => window.neverReloaded === true))) failures.push(`the ${name}'s page was reloaded`);
  }
  await audit(customer, "customer order page");
  await customer.screenshot({ path: `${shots}/customer-order.png`, fullPage: true });
  await audit(vendor, "staff order page with parcels");
  await vendor.screenshot({ path: `${shots}/vendor-order-shipped.png`, fullPage: true });

  // The customer's list follows too: delivered, without a reload.
  await customer.getByRole("link", { name: "My orders" }).click();
  await customer.getByRole("heading", { name: "My orders" }).waitFor(WAIT);
  await live(customer);
  const row = customer.getByRole("row").filter({ has: customer.getByRole("link", { name: short }) });
  await row.getByText("shipped").waitFor(WAIT);
  await vendor.getByRole("button", { name: "Mark delivered", exact: true }).click();
  await row.getByText("delivered").waitFor(WAIT);
  await audit(customer, "my orders");
  if (!(await customer.evaluate(() => window.neverReloaded === true))) failures.push("the customer's page was reloaded");

  // Cash on delivery: the vendor records it on the order's page, then refunds it in full.
  await vendor.getByRole("button", { name: "Record payment" }).click();
  await vendor.locator('[data-field="payment"]').filter({ hasText: /^paid/ }).waitFor(WAIT);
  await audit(vendor, "staff order page");
  await vendor.screenshot({ path: `${shots}/vendor-order-paid.png`, fullPage: true });
  await vendor.getByRole("button", { name: "Refund", exact: true }).click();
  await vendor.locator('[data-field="status"]').filter({ hasText: "refunded" }).waitFor(WAIT);
  await vendor.locator('[data-field="payment"]').filter({ hasText: /^refunded/ }).waitFor(WAIT);

  // An admin's pages: users, stalled orders, dead letters, webhooks, products.
  const adminContext = await browser.newContext({ viewport: { width: 1280, height: 900 }, bypassCSP: true });
  const admin = await adminContext.newPage();
  admin.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
  await signIn(admin, env("ADMIN"));
  for (const [link, heading, file] of [["Users", "Users", "admin-users"], ["Stalled orders", "Stalled orders", "admin-stalled"], ["Dead letters", "Dead letters", "admin-dead-letters"], ["Webhooks", "Webhooks", "admin-webhooks"], ["Products", "Products", "admin-products"]]) {
    await admin.getByRole("link", { name: link, exact: true }).click();
    await admin.getByRole("heading", { name: heading, exact: true }).waitFor(WAIT);
    await audit(admin, heading);
    await admin.screenshot({ path: `${shots}/${file}.png`, fullPage: true });
  }
} catch (error) {
  failures.push(`scenario failed: ${error.message}`);
} finally {
  await browser.close();
}

if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`console scenario passed; screenshots in ${shots}`);
