-- Every request carries the example key of ab-api-key.toml (README's
-- `sy_example-key-replace-me`).
wrk.headers["x-api-key"] = "sy_example-key-replace-me"
