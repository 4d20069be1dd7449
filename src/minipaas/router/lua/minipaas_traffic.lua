-- Per-app traffic counters, written in the log phase into a lua_shared_dict of their own.
--
-- Keyed by app id, never by route or port, so a redeploy or a host change keeps counting.
-- Two kinds of keys:
--   "t:<id>:..." cumulative since nginx started (Prometheus counters; no expiry);
--   "<minute>:<id>:..." one minute's counts (rollups for people), expiring after the window.
-- Suffixes: s<1-5> requests by status class, m<METHOD> by method (cumulative only), b bytes
-- sent, n latency sum in ms (cumulative only), h<i> latency histogram bucket i (coarse
-- buckets for the cumulative keys, fine ones per minute).
-- A request adds to its worker's own tables; a timer moves them to the dict every
-- `flush_every` seconds with one incr (with an initial value) per key. A full dict evicts the
-- least recently used keys or refuses the write: data is lost, the request never waits.

local _M = {}

local dict = ngx.shared.minipaas_traffic
local inflight = ngx.shared.minipaas_inflight
local floor = math.floor
local get_method = ngx.req.get_method
local start_time = ngx.req.start_time
local now = ngx.now
local var = ngx.var

local enabled = false
local fine = {} -- per-minute histogram bounds, ms, ascending; index #fine + 1 is +Inf
local coarse = {} -- cumulative histogram bounds, ms (each one of the fine bounds)
local to_coarse = {}
local minute_ttl = 3960
local window = 60
local flush_every = 0.25 -- seconds between a worker's flushes to the shared dict

local METHODS = {
    GET = "GET", HEAD = "HEAD", POST = "POST", PUT = "PUT", PATCH = "PATCH",
    DELETE = "DELETE", OPTIONS = "OPTIONS",
}
_M.METHOD_NAMES = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other" }

-- set in init(), in the master: workers inherit them
function _M.init(opts)
    enabled = opts.enabled == true and dict ~= nil
    fine = opts.buckets or {}
    coarse = opts.coarse_buckets or {}
    minute_ttl = opts.minute_ttl or minute_ttl
    window = opts.window or window
    -- fine bucket index -> coarse one: one search per request instead of two
    to_coarse = {}
    local j = 1
    for i = 1, #fine + 1 do
        while j <= #coarse and fine[i] and fine[i] > coarse[j] do
            j = j + 1
        end
        to_coarse[i] = fine[i] and j or #coarse + 1
    end
    flush_every = opts.flush_every or flush_every
end

function _M.enabled()
    return enabled
end

-- index of the first bound >= ms, or #bounds + 1 (+Inf)
local function bucket(bounds, ms)
    local low, high = 1, #bounds + 1
    while low < high do
        local mid = floor((low + high) / 2)
        if ms <= bounds[mid] then
            high = mid
        else
            low = mid + 1
        end
    end
    return low
end

local last_complaint = 0

local function add(key, value, ttl)
    local _, err = dict:incr(key, value, 0, ttl)
    -- once a minute per worker at most: a full dict must not flood the error log either
    if err and now() - last_complaint > 60 then
        last_complaint = now()
        ngx.log(ngx.WARN, "traffic metrics dropped (ROUTER_METRICS_MB too small?): ", err)
    end
end

-- Counts since the last flush, in this worker's own memory: a request costs a few table
-- additions instead of eight locked shared-dict writes (measured: 0.94x throughput vs ~1x)
local totals = {} -- app id -> counts
local minutes = {} -- minute number -> app id -> counts

local function counts_for(by_id, id)
    local c = by_id[id]
    if not c then
        c = { s = { 0, 0, 0, 0, 0 }, m = {}, b = 0, n = 0, h = {} }
        by_id[id] = c
    end
    return c
end

local function write(prefix, c, ttl)
    for class = 1, 5 do
        if c.s[class] > 0 then
            add(prefix .. "s" .. class, c.s[class], ttl)
        end
    end
    for name, value in pairs(c.m) do
        add(prefix .. "m" .. name, value, ttl)
    end
    if c.b > 0 then
        add(prefix .. "b", c.b, ttl)
    end
    if c.n > 0 then
        add(prefix .. "n", c.n, ttl)
    end
    for index, value in pairs(c.h) do
        add(prefix .. "h" .. index, value, ttl)
    end
end

-- Moves this worker's counts into the shared dict; also runs when the worker exits (premature)
local function flush()
    local t, m = totals, minutes
    totals, minutes = {}, {}
    for id, c in pairs(t) do
        write("t:" .. id .. ":", c, nil)
    end
    for minute, by_id in pairs(m) do
        for id, c in pairs(by_id) do
            write(minute .. ":" .. id .. ":", c, minute_ttl)
        end
    end
end

-- init_worker phase
function _M.start()
    if not enabled then
        return
    end
    local ok, err = ngx.timer.every(flush_every, flush)
    if not ok then
        ngx.log(ngx.ERR, "traffic metrics off in this worker: no flush timer: ", err)
        enabled = false
    end
end

-- log phase: one request answered for app `id` (proxied, or the router's own 503 page)
function _M.record(id)
    if not enabled then
        return
    end
    local status = ngx.status or 0
    local class = floor(status / 100)
    if class < 1 or class > 5 then
        class = 5 -- no status at all: the router failed to give an answer
    end
    local time = now()
    local ms = floor((time - start_time()) * 1000 + 0.5)
    local bytes = tonumber(var.bytes_sent) or 0
    local method = METHODS[get_method()] or "other"

    local c = counts_for(totals, id)
    c.s[class] = c.s[class] + 1
    c.m[method] = (c.m[method] or 0) + 1
    c.b = c.b + bytes
    c.n = c.n + ms
    local index = bucket(fine, ms)
    local wide = to_coarse[index]
    c.h[wide] = (c.h[wide] or 0) + 1

    local minute = floor(time / 60)
    local by_id = minutes[minute]
    if not by_id then
        by_id = {}
        minutes[minute] = by_id
    end
    c = counts_for(by_id, id)
    c.s[class] = c.s[class] + 1
    c.b = c.b + bytes
    c.h[index] = (c.h[index] or 0) + 1
end

-- reading (control socket): plain gets, no dict-wide lock held for long

local function counts(prefix, names)
    local found, any = {}, false
    for _, name in ipairs(names) do
        local value = dict:get(prefix .. name)
        if value and value > 0 then
            found[name] = value
            any = true
        end
    end
    return found, any
end

local CLASSES = { "1", "2", "3", "4", "5" }

local function histogram(prefix, size)
    local found = {}
    for i = 1, size + 1 do
        local value = dict:get(prefix .. "h" .. i)
        if value and value > 0 then
            found[tostring(i)] = value
        end
    end
    return found
end

-- Requests being proxied to any of the entry's backends (keys "<address>:<port>")
local function busy_of(entry)
    if not entry.port then
        return 0
    end
    local backends = entry.backends or { entry }
    local n = 0
    for _, backend in ipairs(backends) do
        n = n + (inflight:get((backend.address or "127.0.0.1") .. ":" .. backend.port) or 0)
    end
    return n
end

-- Cumulative counters of the apps in `entries` (the route table) that have any
function _M.totals(entries)
    local apps = {}
    for _, entry in ipairs(entries) do
        local prefix = "t:" .. entry.id .. ":"
        local classes, any = counts(prefix .. "s", CLASSES)
        local busy = busy_of(entry)
        if any or busy > 0 then
            apps[tostring(entry.id)] = {
                status = classes,
                methods = (counts(prefix .. "m", _M.METHOD_NAMES)),
                bytes = dict:get(prefix .. "b") or 0,
                latency_ms_sum = dict:get(prefix .. "n") or 0,
                buckets = histogram(prefix, #coarse),
                in_flight = busy,
            }
        end
    end
    return apps
end

-- One app's minutes within the window (those with requests), newest last
function _M.minutes(entry)
    local current = floor(ngx.time() / 60)
    local list = {}
    for minute = current - window, current do
        local prefix = minute .. ":" .. entry.id .. ":"
        local classes, any = counts(prefix .. "s", CLASSES)
        if any then
            list[#list + 1] = {
                minute = minute,
                status = classes,
                bytes = dict:get(prefix .. "b") or 0,
                buckets = histogram(prefix, #fine),
            }
        end
    end
    return {
        minute = current,
        minutes = list,
        in_flight = busy_of(entry),
    }
end

return _M
