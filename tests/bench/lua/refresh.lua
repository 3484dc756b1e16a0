-- W6: refresh-token rotation. Every refresh token is spent once and answered with a new one,
-- which this script takes from the JSON response and presents next: each login is a chain of
-- rotations, never a token presented twice (that would be reuse and revoke the login).
--
-- The runner logs in BENCH_TOKENS_PER_THREAD times per wrk thread beforehand and writes one
-- refresh token a line to BENCH_REFRESH_FILE. wrk does not tell request() which connection
-- asks, so each thread keeps a queue: a request takes a token, its response puts the
-- successor back. One token more than connections per thread, because wrk calls request()
-- once in thread 0 to check the script, and that token is never sent.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local report = require("report")

local threads_started = 0

function setup(thread)
  thread:set("thread_number", threads_started)
  threads_started = threads_started + 1
end

local queue = {}
local first, last = 1, 0
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

local function push(token)
  last = last + 1
  queue[last] = token
end

local function pop()
  if first > last then
    return nil
  end
  local token = queue[first]
  queue[first] = nil
  first = first + 1
  return token
end

function init(args)
  local per_thread = tonumber(os.getenv("BENCH_TOKENS_PER_THREAD"))
  local from = thread_number * per_thread + 1
  local line_number = 0
  for line in io.lines(os.getenv("BENCH_REFRESH_FILE")) do
    line_number = line_number + 1
    if line_number >= from and line_number < from + per_thread then
      push(line)
    end
  end
end

function request()
  -- An empty queue means a chain broke (an error answer or a timeout); the request is sent
  -- anyway with a token that can't work, so the failure is counted, not hidden.
  local token = pop() or "chain-broken"
  return wrk.format("POST", "/token", headers, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  if status == 200 then
    local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if token then
      push(token)
    end
  end
end

done = report.done
