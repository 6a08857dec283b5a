import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["conformance.test.mjs"],
    // The suite sets its own per-test timeouts; 5 s is vitest's default and what it assumes.
    testTimeout: 5000,
    reporters: process.env.DS_CONFORMANCE_REPORTER
      ? [process.env.DS_CONFORMANCE_REPORTER]
      : ["default"],
  },
})
