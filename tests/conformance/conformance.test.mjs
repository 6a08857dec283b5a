// Runs the official Durable Streams conformance suite (pinned in package-lock.json) against
// the server at DS_CONFORMANCE_URL. scripts/conformance.sh starts that server and sets it.
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.DS_CONFORMANCE_URL
if (!baseUrl) {
  throw new Error("DS_CONFORMANCE_URL is not set; run scripts/conformance.sh")
}

// `subscriptions: true` turns on the six "Reserved subscription APIs" tests (webhooks and
// pull-wake); the server runs with DS_SUBSCRIPTIONS__ALLOW_LOCAL_WEBHOOKS=true so that the
// suite's receiver on 127.0.0.1 is a valid webhook URL.
// DS_CONFORMANCE_SUBSCRIPTIONS=false leaves them out.
const subscriptions = process.env.DS_CONFORMANCE_SUBSCRIPTIONS !== "false"
runConformanceTests({ baseUrl, subscriptions })
