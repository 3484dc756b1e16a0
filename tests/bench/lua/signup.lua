-- W4: signups, every one with a new email: the run's id (BENCH_RUN_ID), wrk's thread number
-- and a per-thread counter make each address unique across threads, connections and runs.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local report = require("report")

local threads_started = 0

function setup(thread)
  thread:set("thread_number", threads_started)
  threads_started = threads_started + 1
end

local prefix
local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  prefix = "bench-" .. os.getenv("BENCH_RUN_ID") .. "-t" .. tostring(thread_number)
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"name": "Bench User", "email": "%s-%d@example.com", "password": "%s"}',
    prefix, counter, os.getenv("BENCH_PASSWORD"))
  return wrk.format("POST", "/signup", headers, body)
end

done = report.done
