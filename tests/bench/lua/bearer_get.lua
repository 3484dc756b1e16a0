-- W1, W2 and the references: GET the URL given to wrk with a bearer token (BENCH_TOKEN).
-- No request() function: wrk builds the request once and sends it as is (its fast path).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local report = require("report")

wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

done = report.done
