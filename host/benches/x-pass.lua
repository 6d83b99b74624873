-- Every request carries x-pass (test-filter lets it through unchanged).
wrk.headers["x-pass"] = "1"
