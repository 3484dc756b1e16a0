-- W3 and W5's storm: the password grant for one account (BENCH_EMAIL, BENCH_PASSWORD).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local report = require("report")

local function form_escape(value)
  return (value:gsub("[^%w%-%._~]", function(char)
    return string.format("%%%02X", string.byte(char))
  end))
end

wrk.method = "POST"
wrk.path = "/token"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=password&username=" .. form_escape(os.getenv("BENCH_EMAIL")) ..
  "&password=" .. form_escape(os.getenv("BENCH_PASSWORD"))

done = report.done
