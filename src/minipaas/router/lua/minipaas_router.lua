-- mini-paas route table: app entries and a host index in one lua_shared_dict.
--
-- Keys: "app:<id>" -> JSON entry {id, kind, port, address, backends, name, hosts};
-- "host:<name>" -> id. `address`:`port` is the first replica's (no address: 127.0.0.1);
-- `backends` lists every replica as {address, port} (the first is address:port) when an app
-- has more than one. A backend is an address:port pair: the same port on two nodes is two
-- backends, each with its own in-flight count and down mark.
-- The app entry is the truth: a host key counts only while the entry it points to still lists
-- that host, so a request never sees half of an update (one shared-dict write switches an app).
-- Written by the platform through the control socket (one writer at a time: the Python side
-- holds a file lock); loaded from the snapshot files by init() when nginx starts.

local cjson = require("cjson.safe")
local balancer = require("ngx.balancer")
local traffic = require("minipaas_traffic")
local control = require("minipaas_control")

local is_int = control.is_int
local read_secret = control.read_secret
local read_json = control.read_json

local routes = ngx.shared.minipaas_routes
-- requests being proxied, by backend "<address>:<port>"; and "down:<address>:<port>" marks
local inflight = ngx.shared.minipaas_inflight
local _M = {}

local secret -- read by init() in the master; workers inherit it
local config_version

local MAX_ID = 2147483647
local MAX_HOSTS = 64
local MAX_BACKENDS = 100
-- Where a route without an address sends its traffic (every route before node addresses)
local LOOPBACK = "127.0.0.1"
-- A backend that refused or dropped a connection is skipped this long (passive check)
local DOWN_SECONDS = 3
-- Round robin position per app, in this worker
local next_pick = {}

local NOT_FOUND_HOST = '{"detail": "no app is routed at this host"}'
local NOT_FOUND_PATH = '{"detail": "no app is routed at this path; apps live under /apps/<id>/"}'
local TWO_HOSTS = '{"detail": "the request line and the Host header name different hosts; '
    .. 'send the same host in both, or a path alone in the request line"}'

-- validation: the Python side checks the same rules; this keeps a bad caller from
-- putting anything else into the table

local function is_label(s)
    return #s >= 1 and #s <= 63 and s:find("^[a-z0-9][a-z0-9-]*$") ~= nil
        and s:sub(-1) ~= "-"
end

local function is_host(s)
    if type(s) ~= "string" or #s == 0 or #s > 253 then
        return false
    end
    for label in (s .. "."):gmatch("([^.]*)%.") do
        if not is_label(label) then
            return false
        end
    end
    return true
end

local function is_ipv4(s)
    local parts = { s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$") }
    if #parts ~= 4 then
        return false
    end
    for _, part in ipairs(parts) do
        if #part > 3 or tonumber(part) > 255 or (#part > 1 and part:sub(1, 1) == "0") then
            return false
        end
    end
    return true
end

-- A node's address: an IPv4 dotted quad or a lowercase host name; never a port, a path or
-- anything else that set_current_peer or a log line would read differently
local function is_address(s)
    if type(s) ~= "string" then
        return false
    end
    if s:find("^[%d.]+$") then
        return is_ipv4(s)
    end
    return is_host(s)
end

local function is_list(t, max)
    if type(t) ~= "table" or #t < 1 or #t > max then
        return false
    end
    local count = 0
    for _ in pairs(t) do
        count = count + 1
    end
    return count == #t
end

-- The replicas: nil for one backend (the usual case), else a list of {address, port} that
-- starts with the route's own. `ports` is the form from before node addresses (a snapshot
-- kept over an upgrade): every port at the route's address.
local function check_backends(data, address, port)
    local list = data.backends
    if list == nil or list == cjson.null then
        local ports = data.ports
        if ports == nil or ports == cjson.null then
            return nil
        end
        if not is_list(ports, MAX_BACKENDS) then
            return nil, "ports must be a list of at most " .. MAX_BACKENDS .. " ports"
        end
        list = {}
        for i, p in ipairs(ports) do
            list[i] = { address = address, port = p }
        end
    end
    if port == nil then
        return nil
    end
    if not is_list(list, MAX_BACKENDS) then
        return nil, "backends must be a list of at most " .. MAX_BACKENDS .. " backends"
    end
    local backends, seen = {}, {}
    for i, b in ipairs(list) do
        if type(b) ~= "table" or not is_address(b.address) or not is_int(b.port, 1, 65535) then
            return nil, "every backend is {address, port}: an IPv4 address or a host name, "
                .. "and a port between 1 and 65535"
        end
        local key = b.address .. ":" .. b.port
        if seen[key] then
            return nil, "backends must be distinct"
        end
        seen[key] = true
        backends[i] = { address = b.address, port = b.port }
    end
    if backends[1].address ~= address or backends[1].port ~= port then
        return nil, "backends must start with the route's address and port"
    end
    if #backends == 1 then
        return nil
    end
    return backends
end

local function check_entry(data)
    if type(data) ~= "table" then
        return nil, "a route is a JSON object"
    end
    if not is_int(data.id, 1, MAX_ID) then
        return nil, "id must be an integer between 1 and " .. MAX_ID
    end
    if data.kind ~= "proxy" and data.kind ~= "stopped" then
        return nil, "kind must be proxy or stopped"
    end
    local port = data.port
    if port == cjson.null or data.kind == "stopped" then
        port = nil
    end
    if data.kind == "proxy" and not is_int(port, 1, 65535) then
        return nil, "a proxy route needs a port between 1 and 65535"
    end
    local address = data.address
    if address == nil or address == cjson.null or port == nil then
        address = LOOPBACK
    elseif not is_address(address) then
        return nil, "address must be an IPv4 address or a host name (no port, no path)"
    end
    local backends, err = check_backends(data, address, port)
    if err then
        return nil, err
    end
    if type(data.name) ~= "string" or not is_label(data.name) then
        return nil, "name must be a DNS label"
    end
    local hosts = data.hosts
    if hosts == nil or hosts == cjson.null then
        hosts = {}
    end
    if type(hosts) ~= "table" or #hosts > MAX_HOSTS then
        return nil, "hosts must be a list of at most " .. MAX_HOSTS .. " host names"
    end
    local seen, count = {}, 0
    for _ in pairs(hosts) do
        count = count + 1
    end
    if count ~= #hosts then
        return nil, "hosts must be a list"
    end
    for _, host in ipairs(hosts) do
        if not is_host(host) or seen[host] then
            return nil, "hosts must be distinct lowercase host names"
        end
        seen[host] = true
    end
    return {
        id = data.id, kind = data.kind, port = port, address = address, backends = backends,
        name = data.name, hosts = hosts,
    }
end

local function encode_entry(entry)
    local copy = { id = entry.id, kind = entry.kind, port = entry.port, name = entry.name }
    -- Left out on loopback: a one-host entry stays as small as it always was
    if entry.address ~= LOOPBACK then
        copy.address = entry.address
    end
    if entry.backends then
        copy.backends = entry.backends
    end
    -- cjson writes an empty table as {}; leave the key out instead
    if #entry.hosts > 0 then
        copy.hosts = entry.hosts
    end
    return cjson.encode(copy)
end

local function decode_entry(raw)
    local entry = cjson.decode(raw)
    if entry then
        if not entry.hosts then
            entry.hosts = {}
        end
        if not entry.address then
            entry.address = LOOPBACK
        end
    end
    return entry
end

local function get_entry(id)
    local raw = routes:get("app:" .. id)
    return raw and decode_entry(raw)
end

local function lists(entry, host)
    for _, h in ipairs(entry.hosts) do
        if h == host then
            return true
        end
    end
    return false
end

-- The app serving `host`, or nil; a stale host key (its app no longer lists it) is no route
local function entry_for_host(host)
    local id = routes:get("host:" .. host)
    if not id then
        return nil
    end
    local entry = get_entry(id)
    if entry and lists(entry, host) then
        return entry
    end
    return nil
end

-- table updates

local function drop_hosts(id, hosts, keep)
    for _, host in ipairs(hosts) do
        if not (keep and lists(keep, host)) and routes:get("host:" .. host) == id then
            routes:delete("host:" .. host)
        end
    end
end

-- Writes one app's entry; `exclusive` refuses a host another app serves (409).
-- New host keys go first (ignored until the entry lists them), then the entry itself: the
-- one write that switches the app. A failure undoes what this call wrote.
local function put(entry, exclusive)
    local id = entry.id
    if exclusive then
        for _, host in ipairs(entry.hosts) do
            local owner = entry_for_host(host)
            if owner and owner.id ~= id then
                return nil, 409, "host " .. host .. " is routed to app " .. owner.id
            end
        end
    end
    local added = {}
    local function undo_hosts()
        for _, host in ipairs(added) do
            routes:delete("host:" .. host)
        end
    end
    -- safe_set: a full table fails the update instead of evicting other apps' routes
    for _, host in ipairs(entry.hosts) do
        if routes:get("host:" .. host) ~= id then
            local ok, err = routes:safe_set("host:" .. host, id)
            if not ok then
                undo_hosts()
                return nil, 507, "route table: " .. tostring(err)
            end
            added[#added + 1] = host
        end
    end
    local old_raw = routes:get("app:" .. id)
    local raw = encode_entry(entry)
    -- A full sync sends every app and most have not changed: write only what differs
    if raw ~= old_raw then
        local ok, err = routes:safe_set("app:" .. id, raw)
        if not ok then
            -- a failed safe_set has already freed the old value; its space takes it back
            if old_raw and not routes:safe_set("app:" .. id, old_raw) then
                ngx.log(ngx.ERR, "route of app ", id, " lost: the table is full")
            end
            undo_hosts()
            return nil, 507, "route table: " .. tostring(err)
        end
    end
    if old_raw then
        drop_hosts(id, decode_entry(old_raw).hosts, entry)
    end
    return true
end

local function remove(id)
    local old = get_entry(id)
    routes:delete("app:" .. id)
    if old then
        drop_hosts(id, old.hosts, nil)
    end
end

-- Makes `entries` the whole table. Per app atomic, not as a whole: a failure (a full table)
-- leaves some apps updated; the caller's next full sync finishes the job.
local function replace(entries)
    local keep = {}
    for _, entry in ipairs(entries) do
        keep[entry.id] = true
    end
    -- Removals first: they free the room the new entries may need
    for _, key in ipairs(routes:get_keys(0)) do
        local id = tonumber(key:match("^app:(%d+)$"))
        if id and not keep[id] then
            remove(id)
        end
    end
    for _, entry in ipairs(entries) do
        local ok, status, err = put(entry, false)
        if not ok then
            return nil, status, err
        end
    end
    -- Host keys left behind by a host that moved between apps in this table
    for _, key in ipairs(routes:get_keys(0)) do
        local host = key:match("^host:(.+)$")
        if host and not entry_for_host(host) then
            routes:delete(key)
        end
    end
    return true
end

local function check_entries(list)
    if type(list) ~= "table" then
        return nil, "routes must be a list"
    end
    local entries, ids, hosts = {}, {}, {}
    for i, data in ipairs(list) do
        local entry, err = check_entry(data)
        if not entry then
            return nil, "route " .. i .. ": " .. err
        end
        if ids[entry.id] then
            return nil, "app " .. entry.id .. " appears twice"
        end
        ids[entry.id] = true
        for _, host in ipairs(entry.hosts) do
            if hosts[host] then
                return nil, "host " .. host .. " is listed by apps " .. hosts[host] .. " and "
                    .. entry.id
            end
            hosts[host] = entry.id
        end
        entries[i] = entry
    end
    return entries
end

-- start: the snapshot (compacted) then the journal (appended since), one JSON op a line

local function fold_file(path, table_by_id)
    local file = io.open(path, "r")
    if not file then
        return 0
    end
    local n = 0
    for line in file:lines() do
        local op = cjson.decode(line)
        local entry = op and op.op == "set" and check_entry(op.route)
        if entry then
            table_by_id[entry.id] = entry
            n = n + 1
        elseif op and op.op == "remove" and is_int(op.id, 1, MAX_ID) then
            table_by_id[op.id] = nil
            n = n + 1
        elseif line ~= "" then
            -- e.g. a line cut short by a power loss; the platform's next full sync repairs it
            ngx.log(ngx.WARN, "skipping unreadable route line in ", path)
        end
    end
    file:close()
    return n
end

function _M.init(opts)
    config_version = opts.version
    traffic.init(opts.traffic or {})
    secret = read_secret(opts.secret_file)
    -- A broken snapshot must not keep the router from starting: log it and go on
    local ok, err = pcall(function()
        local by_id = {}
        fold_file(opts.snapshot_file, by_id)
        fold_file(opts.journal_file, by_id)
        local entries = {}
        for _, entry in pairs(by_id) do
            entries[#entries + 1] = entry
        end
        local done, _, problem = replace(entries)
        if not done then
            error(problem)
        end
    end)
    if not ok then
        ngx.log(ngx.ERR, "routes not restored from the snapshot: ", err)
    end
end

function _M.init_worker()
    traffic.start()
end

-- requests

local function send(status, content_type, body, extra_headers)
    ngx.status = status
    ngx.header["Content-Type"] = content_type
    if extra_headers then
        for name, value in pairs(extra_headers) do
            ngx.header[name] = value
        end
    end
    ngx.print(body)
    return ngx.exit(ngx.HTTP_OK)
end

local function stopped_page(entry)
    local name = entry.name -- a DNS label (checked on the way in): safe in HTML
    return "<!doctype html><title>" .. name .. " is stopped</title><h1>503: app " .. name
        .. " is not running</h1><p>Start or deploy it through the mini-paas API.</p>"
end

-- passive failure detection, shared by the workers: keys "down:<address>:<port>" expire by
-- themselves

local function key_of(backend)
    return backend.address .. ":" .. backend.port
end

local function mark_down(key)
    inflight:set("down:" .. key, true, DOWN_SECONDS)
end

local function is_down(key)
    return inflight:get("down:" .. key) ~= nil
end

-- Round robin over the app's backends, skipping those marked down (all down: try anyway)
local function pick(entry)
    local backends = entry.backends
    local n = #backends
    local start = (next_pick[entry.id] or 0) % n
    next_pick[entry.id] = start + 1
    for i = 0, n - 1 do
        local backend = backends[(start + i) % n + 1]
        if not is_down(key_of(backend)) then
            return backend
        end
    end
    return backends[start + 1]
end

local function serve(entry)
    -- Counted by app id in the log phase (traffic metrics), the stopped page's 503 too
    local ctx = ngx.ctx
    ctx.minipaas_app = entry.id
    if entry.kind == "stopped" then
        return send(503, "text/html", stopped_page(entry), { ["Retry-After"] = "30" })
    end
    local backend = entry
    if entry.backends then
        backend = pick(entry)
        ctx.minipaas_backends = entry.backends
    end
    local key = key_of(backend)
    ctx.minipaas_backend = backend
    ctx.minipaas_key = key
    -- Counted until the log phase: a deploy waits for its old container's requests to end
    local ok = inflight:incr(key, 1, 0)
    if ok then
        ctx.minipaas_counted = key
    end
end

local function last_item(list)
    return list and list:match("([^,%s]+)%s*$")
end

-- A request that ended on a backend that never answered (refused, reset, timed out: nginx
-- says 502/504 with no header time) marks that backend down, retried or not
local function note_failure(ctx)
    local status = last_item(ngx.var.upstream_status)
    if (status == "502" or status == "504") and last_item(ngx.var.upstream_header_time) == "-" then
        mark_down(ctx.minipaas_key)
    end
end

-- log phase of every proxied request
function _M.done()
    local ctx = ngx.ctx
    local key = ctx.minipaas_counted
    if key then
        inflight:incr(key, -1, 0)
    end
    if ctx.minipaas_backends then
        note_failure(ctx)
    end
    local id = ngx.ctx.minipaas_app
    if id then
        traffic.record(id)
    end
end

-- nginx takes the host from the request line when it names one ("GET http://a/ HTTP/1.1"),
-- and an app is sent the Host header: the two must name one host, or a client could route by
-- one and hand the app another (a password-reset link built from Host, say)
local function one_host(host)
    local header = ngx.var.http_host
    if not header or header == host then
        return true
    end
    -- The header is the host, any case, then perhaps a trailing dot and a port
    local length = #host
    if header:sub(1, length):lower() ~= host then
        return false
    end
    local rest = header:sub(length + 1)
    return rest == "" or rest == "." or rest:find("^%.?:%d*$") ~= nil
end

function _M.route_by_host()
    -- $host: lowercased, without port or trailing dot
    local host = ngx.var.host
    if not one_host(host) then
        return send(400, "application/json", TWO_HOSTS)
    end
    local entry = entry_for_host(host)
    if not entry then
        return send(404, "application/json", NOT_FOUND_HOST)
    end
    return serve(entry)
end

function _M.route_by_path()
    if not one_host(ngx.var.host) then
        return send(400, "application/json", TWO_HOSTS)
    end
    local entry = get_entry(tonumber(ngx.var.minipaas_app_id))
    if not entry then
        return send(404, "application/json", NOT_FOUND_PATH)
    end
    return serve(entry)
end

function _M.redirect_by_path()
    local id = tonumber(ngx.var.minipaas_app_id)
    if not get_entry(id) then
        return send(404, "application/json", NOT_FOUND_PATH)
    end
    local args = ngx.var.args
    local target = "/apps/" .. id .. "/" .. (args and ("?" .. args) or "")
    return ngx.redirect(target, 308)
end

-- A retry (nginx calls the balancer again after an error or timeout, for idempotent
-- requests and for any request not yet sent): the failed backend is marked down and the next
-- one not yet tried takes the request, and its in-flight count
local function next_backend(ctx)
    local failed = ctx.minipaas_key
    mark_down(failed)
    local backends, tried = ctx.minipaas_backends, ctx.minipaas_tried
    local chosen, chosen_key
    for _, backend in ipairs(backends) do
        local key = key_of(backend)
        if not tried[key] and (chosen == nil or not is_down(key)) then
            chosen, chosen_key = backend, key
            if not is_down(key) then
                break
            end
        end
    end
    if not chosen then
        return nil
    end
    if ctx.minipaas_counted then
        inflight:incr(failed, -1, 0)
        inflight:incr(chosen_key, 1, 0)
        ctx.minipaas_counted = chosen_key
    end
    ctx.minipaas_backend = chosen
    ctx.minipaas_key = chosen_key
    return chosen
end

function _M.balance()
    local ctx = ngx.ctx
    local backend = ctx.minipaas_backend
    if not backend then
        ngx.log(ngx.ERR, "no app was chosen for this request")
        return ngx.exit(500)
    end
    if ctx.minipaas_backends then
        if ctx.minipaas_tried then
            backend = next_backend(ctx)
            if not backend then
                return ngx.exit(502)
            end
        else
            ctx.minipaas_tried = {}
            -- nginx retries only on errors and timeouts, and a request already sent only
            -- when its method is idempotent (proxy_next_upstream's default)
            balancer.set_more_tries(#ctx.minipaas_backends - 1)
        end
        ctx.minipaas_tried[ctx.minipaas_key] = true
    end
    -- An IP address: the balancer resolves no names (services/routing.py looks node names
    -- up before it publishes a route), so a name that got here fails as a bad gateway
    local ok, err = balancer.set_current_peer(backend.address, backend.port)
    if not ok then
        ngx.log(ngx.ERR, "set_current_peer ", ctx.minipaas_key, ": ", err)
        return ngx.exit(502)
    end
end

-- control socket

local function reply(status, data)
    return send(status, "application/json", cjson.encode(data))
end

local function dump()
    local parts = {}
    for _, key in ipairs(routes:get_keys(0)) do
        if key:sub(1, 4) == "app:" then
            local raw = routes:get(key)
            if raw then
                parts[#parts + 1] = raw
            end
        end
    end
    return '{"routes": [' .. table.concat(parts, ",") .. "]}"
end

local function entries_in_table()
    local entries = {}
    for _, key in ipairs(routes:get_keys(0)) do
        if key:sub(1, 4) == "app:" then
            local entry = get_entry(tonumber(key:sub(5)))
            if entry then
                entries[#entries + 1] = entry
            end
        end
    end
    return entries
end

-- GET /inflight/<address>:<port> (a bare port: 127.0.0.1, as callers before node addresses)
local function control_inflight(method, target)
    if method ~= "GET" then
        return reply(405, { error = "use GET" })
    end
    local address, port = target:match("^(.+):(%d+)$")
    if not address then
        address, port = LOOPBACK, target:match("^(%d+)$")
    end
    port = tonumber(port)
    if not is_address(address) or not is_int(port, 1, 65535) then
        return reply(400, { error = "use /inflight/<address>:<port>" })
    end
    local key = address .. ":" .. port
    return reply(200, { address = address, port = port, requests = inflight:get(key) or 0 })
end

local function control_traffic(method, id)
    if method ~= "GET" then
        return reply(405, { error = "use GET" })
    end
    if not traffic.enabled() then
        return reply(200, { enabled = false })
    end
    if id then
        local answer = traffic.minutes(get_entry(id) or { id = id })
        answer.enabled = true
        return reply(200, answer)
    end
    return reply(200, { enabled = true, apps = traffic.totals(entries_in_table()) })
end

local function control_app(method, id)
    if method == "PUT" then
        local data, err = read_json()
        local entry
        if data then
            entry, err = check_entry(data)
        end
        if not entry then
            return reply(400, { error = err })
        end
        if entry.id ~= id then
            return reply(400, { error = "the route's id is not the one in the path" })
        end
        local ok, status, problem = put(entry, true)
        if not ok then
            return reply(status, { error = problem })
        end
        return reply(200, { ok = true })
    end
    if method == "DELETE" then
        remove(id)
        return reply(200, { ok = true })
    end
    return reply(405, { error = "use PUT or DELETE" })
end

function _M.control()
    -- Plain comparison: the socket is local and only the platform's processes can open it
    if not secret or ngx.var.http_x_minipaas_router_secret ~= secret then
        return reply(403, { error = "wrong or missing router secret" })
    end
    local method, uri = ngx.req.get_method(), ngx.var.uri
    if uri == "/status" then
        return reply(200, { version = config_version })
    end
    local inflight_of = uri:match("^/inflight/(.+)$")
    if inflight_of then
        return control_inflight(method, inflight_of)
    end
    if uri == "/traffic" then
        return control_traffic(method, nil)
    end
    local traffic_id = tonumber(uri:match("^/traffic/([1-9]%d*)$"))
    if traffic_id and traffic_id <= MAX_ID then
        return control_traffic(method, traffic_id)
    end
    if uri == "/apps" then
        if method == "GET" then
            return send(200, "application/json", dump())
        end
        if method ~= "PUT" then
            return reply(405, { error = "use GET or PUT" })
        end
        local data, err = read_json()
        local entries
        if data then
            entries, err = check_entries(data.routes)
        end
        if not entries then
            return reply(400, { error = err })
        end
        local ok, status, problem = replace(entries)
        if not ok then
            return reply(status, { error = problem })
        end
        return reply(200, { ok = true, routes = #entries })
    end
    local id = tonumber(uri:match("^/apps/([1-9]%d*)$"))
    if id and id <= MAX_ID then
        return control_app(method, id)
    end
    return reply(404, { error = "no such control path" })
end

return _M
