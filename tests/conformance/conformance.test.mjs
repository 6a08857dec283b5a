// Runs the official Durable Streams conformance suite (pinned in package-lock.json) against
// the server at DS_CONFORMANCE_URL. scripts/conformance.sh starts that server and sets it.
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.DS_CONFORMANCE_URL
if (!baseUrl) {
  throw new Error("DS_CONFORMANCE_URL is not set; run scripts/conformance.sh")
}

runConformanceTests({ baseUrl })
