// Headless Chromium opens 12 EventSource streams on one page, against ds-server over HTTPS
// (HTTP/2 by ALPN) and over plain HTTP/1.1; scripts/browser.sh starts both servers and runs
// this. Over HTTP/2 every stream shares one connection and receives its event; over
// HTTP/1.1 the browser opens at most six connections per origin, so six streams starve.
//
//   node sse.mjs <https base URL> <http base URL>
// Environment: CHROMIUM (the browser binary), NODE_EXTRA_CA_CERTS (the test CA, so that
// this script's own appends trust the HTTPS server).

import { chromium } from "playwright-core"

const STREAMS = 12
const WAIT_MS = 8000
const [httpsBase, httpBase] = process.argv.slice(2)
if (!httpsBase || !httpBase) {
  throw new Error("usage: node sse.mjs <https base URL> <http base URL>")
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
})

// Opens the page at `base` (served by the test itself, so that the streams are same-origin),
// creates the streams, opens one EventSource per stream, appends one message to each from
// outside the browser, and reports what each EventSource received.
async function run(base, label) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true })
  const page = await context.newPage()
  await page.route(`${base}/page`, (route) =>
    route.fulfill({ status: 200, contentType: "text/html", body: "<!doctype html><title>sse</title>" }),
  )
  await page.goto(`${base}/page`)
  const names = Array.from({ length: STREAMS }, (_, i) => `browser-${label}-${i}`)
  for (const name of names) {
    const created = await fetch(`${base}/v1/stream/${name}`, {
      method: "PUT",
      headers: { "content-type": "text/plain" },
    })
    if (created.status !== 201) throw new Error(`${label}: create ${name}: ${created.status}`)
  }
  // The protocol the browser speaks to the server, from a request made before the streams.
  const protocol = await page.evaluate(async () => {
    const url = new URL("/healthz", location.href).href
    const answer = await fetch(url, { cache: "no-store" })
    await answer.text()
    for (let i = 0; i < 50; i++) {
      const entry = performance.getEntriesByName(url).pop()
      if (entry) return entry.nextHopProtocol || `empty (${JSON.stringify(entry.toJSON())})`
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    return `unknown (${performance.getEntries().map((e) => e.name).join(", ")})`
  })
  await page.evaluate((names) => {
    window.received = names.map(() => 0)
    names.forEach((name, i) => {
      const es = new EventSource(`/v1/stream/${name}?offset=-1&live=sse`)
      es.addEventListener("data", () => {
        window.received[i] += 1
      })
    })
  }, names)
  // Give the browser time to open what it can, then append to every stream.
  await page.waitForTimeout(500)
  for (const name of names) {
    const appended = await fetch(`${base}/v1/stream/${name}`, {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: `hello ${name}`,
    })
    if (appended.status !== 204) throw new Error(`${label}: append ${name}: ${appended.status}`)
  }
  const until = Date.now() + WAIT_MS
  let received = []
  while (Date.now() < until) {
    received = await page.evaluate(() => window.received)
    if (received.every((n) => n > 0)) break
    await page.waitForTimeout(100)
  }
  await context.close()
  const live = received.filter((n) => n > 0).length
  console.log(`${label}: protocol ${protocol}, ${live} of ${STREAMS} EventSource streams received their event`)
  return { protocol, live }
}

let failed = false
try {
  const h2 = await run(httpsBase, "https")
  const h1 = await run(httpBase, "http")
  if (h2.protocol !== "h2" || h2.live !== STREAMS) {
    console.error(`error: over HTTPS the browser should speak h2 and every stream should receive`)
    failed = true
  }
  if (h1.protocol !== "http/1.1" || h1.live > 6 || h1.live === 0) {
    console.error(`error: over plain HTTP/1.1 at most six streams should receive (the browser's limit)`)
    failed = true
  }
} finally {
  await browser.close()
}
process.exit(failed ? 1 : 0)
