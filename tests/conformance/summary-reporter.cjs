// Mocha's spec reporter that also writes the run's counts and failing titles as JSON to
// the file named by $MOCHA_SUMMARY (read by tests/conformance/runner.py). The runner copies
// this file next to the suite, so that `require("mocha")` finds the suite's own mocha.
"use strict";
const fs = require("fs");
const { Spec } = require("mocha").reporters;

class SummaryReporter extends Spec {
  constructor(runner, options) {
    super(runner, options);
    const failed = [];
    runner.on("fail", (test, err) => {
      failed.push({ title: test.fullTitle(), error: String((err && err.message) || err) });
    });
    runner.once("end", () => {
      const { passes, failures, pending } = this.stats;
      fs.writeFileSync(
        process.env.MOCHA_SUMMARY,
        JSON.stringify({ passes, failures, pending, failed }),
      );
    });
  }
}

module.exports = SummaryReporter;
