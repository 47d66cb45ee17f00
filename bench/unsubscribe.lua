-- For bench/unsubscribe.py: wrk POSTs one-click unsubscribes (RFC 8058) to the
-- paths listed in a file (one signed token per subscriber), each thread taking
-- its own share of them in turn, so that requests go to distinct subscribers.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  paths = {}
  local n, count = 0, tonumber(args[2])
  for line in io.lines(args[1]) do
    if n % count == id then paths[#paths + 1] = line end
    n = n + 1
  end
  i = 0
end

function request()
  i = i % #paths + 1
  return wrk.format("POST", paths[i], {["Content-Type"] = "application/x-www-form-urlencoded"},
    "List-Unsubscribe=One-Click")
end
