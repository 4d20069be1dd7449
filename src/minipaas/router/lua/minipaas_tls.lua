-- mini-paas HTTPS: certificates chosen by SNI, ACME HTTP-01 tokens, per-app redirect and HSTS.
--
-- One lua_shared_dict (minipaas_tls), written through the control socket (/tls/...):
--   "cert:<name>"  -> certificate chain PEM .. "\0" .. private key PEM ("*.<domain>" for wildcards)
--   "app:<id>"     -> "<redirect 0|1>:<hsts max-age>"
--   "acme:<token>" -> the key authorization served at /.well-known/acme-challenge/<token>
--   "version"      -> the state's version (the platform compares it with what it would send)
-- A new or renewed certificate is one shared-dict write: no reload, open connections untouched.
-- The state is also kept in a file (0600) that init() loads, so a restarted nginx has it at once.

local cjson = require("cjson.safe")
local ssl = require("ngx.ssl")
local control = require("minipaas_control")

local is_int = control.is_int
local read_secret = control.read_secret
local read_json = control.read_json

local store = ngx.shared.minipaas_tls
local _M = {}

local secret
local tls_port = 443
-- Per worker: parsed certificate and key by name, kept while the stored text is the same
local parsed = {}

local MAX_NAMES = 100
local TOKEN_TTL = 3600 -- a token left behind by a killed worker expires by itself

local function is_name(s)
    if type(s) ~= "string" or #s == 0 or #s > 253 then
        return false
    end
    local rest = s
    if s:sub(1, 2) == "*." then
        rest = s:sub(3)
    end
    for label in (rest .. "."):gmatch("([^.]*)%.") do
        if #label < 1 or #label > 63 or not label:find("^[a-z0-9][a-z0-9-]*$")
            or label:sub(-1) == "-" then
            return false
        end
    end
    return true
end

-- state: {version = "...", certs = [{names = [...], cert = pem, key = pem}],
--         apps = [{id = n, redirect = bool, hsts_max_age = n}]}
local function check_state(data, parse)
    if type(data) ~= "table" or type(data.version) ~= "string" or #data.version > 64 then
        return nil, "state needs a version string"
    end
    local certs, apps = data.certs or {}, data.apps or {}
    if type(certs) ~= "table" or type(apps) ~= "table" then
        return nil, "certs and apps must be lists"
    end
    for i, item in ipairs(certs) do
        if type(item) ~= "table" or type(item.cert) ~= "string" or type(item.key) ~= "string"
            or type(item.names) ~= "table" or #item.names == 0 or #item.names > MAX_NAMES then
            return nil, "certificate " .. i .. " needs names, cert and key"
        end
        for _, name in ipairs(item.names) do
            if not is_name(name) then
                return nil, "certificate " .. i .. ": " .. tostring(name) .. " is not a host name"
            end
        end
        if parse then
            local cert, err = ssl.parse_pem_cert(item.cert)
            if not cert then
                return nil, "certificate " .. i .. ": " .. tostring(err)
            end
            local key, key_err = ssl.parse_pem_priv_key(item.key)
            if not key then
                return nil, "certificate " .. i .. " key: " .. tostring(key_err)
            end
        end
    end
    for i, app in ipairs(apps) do
        if type(app) ~= "table" or not is_int(app.id, 1, 2147483647)
            or type(app.redirect) ~= "boolean" or not is_int(app.hsts_max_age, 0, 63072000) then
            return nil, "app option " .. i .. " needs id, redirect and hsts_max_age"
        end
    end
    return { version = data.version, certs = certs, apps = apps }
end

-- Sets every given key, then drops the ones the state no longer has. A name switches from its
-- old certificate to its new one in one write.
local function apply(state)
    local wanted = {}
    for _, item in ipairs(state.certs) do
        local value = item.cert .. "\0" .. item.key
        for _, name in ipairs(item.names) do
            local ok, err = store:safe_set("cert:" .. name, value)
            if not ok then
                return nil, "certificate table: " .. tostring(err)
            end
            wanted["cert:" .. name] = true
        end
    end
    for _, app in ipairs(state.apps) do
        local key = "app:" .. app.id
        local ok, err = store:safe_set(key, (app.redirect and "1" or "0") .. ":" .. app.hsts_max_age)
        if not ok then
            return nil, "app options: " .. tostring(err)
        end
        wanted[key] = true
    end
    for _, key in ipairs(store:get_keys(0)) do
        local kind = key:match("^(%a+):")
        if (kind == "cert" or kind == "app") and not wanted[key] then
            store:delete(key)
        end
    end
    store:set("version", state.version)
    return true
end

function _M.init(opts)
    secret = read_secret(opts.secret_file)
    tls_port = opts.tls_port or 443
    local file = io.open(opts.state_file, "r")
    if not file then
        return
    end
    local text = file:read("*a")
    file:close()
    local state, err = check_state(cjson.decode(text), false)
    if state then
        state, err = apply(state)
    end
    if not state then
        -- the platform's next reconciler pass pushes the state again
        ngx.log(ngx.ERR, "TLS state not restored from ", opts.state_file, ": ", err)
    end
end

-- ssl_certificate_by_lua: the certificate for the SNI name, else its wildcard, else the
-- static fallback nginx started with
function _M.choose_certificate()
    local name = ssl.server_name()
    if not name then
        return
    end
    name = name:lower()
    local raw = store:get("cert:" .. name)
    if not raw then
        local parent = name:match("^[^.]+%.(.+)$")
        if parent then
            name = "*." .. parent
            raw = store:get("cert:" .. name)
        end
    end
    if not raw then
        return
    end
    local entry = parsed[name]
    if not entry or entry.raw ~= raw then
        local split = raw:find("\0", 1, true)
        local cert, err = ssl.parse_pem_cert(raw:sub(1, split - 1))
        local key
        if cert then
            key, err = ssl.parse_pem_priv_key(raw:sub(split + 1))
        end
        if not key then
            ngx.log(ngx.ERR, "certificate of ", name, " unusable: ", err)
            return
        end
        entry = { raw = raw, cert = cert, key = key }
        parsed[name] = entry
    end
    local ok, err = ssl.clear_certs()
    if ok then
        ok, err = ssl.set_cert(entry.cert)
    end
    if ok then
        ok, err = ssl.set_priv_key(entry.key)
    end
    if not ok then
        ngx.log(ngx.ERR, "certificate of ", name, " not set: ", err)
        return ngx.exit(ngx.ERROR)
    end
end

-- content of /.well-known/acme-challenge/<token> on the HTTP port
function _M.challenge()
    local token = ngx.var.uri:match("^/%.well%-known/acme%-challenge/([A-Za-z0-9_-]+)$")
    local value = token and store:get("acme:" .. token)
    if not value then
        ngx.status = 404
        ngx.header["Content-Type"] = "text/plain"
        ngx.print("no such challenge\n")
        return ngx.exit(ngx.HTTP_OK)
    end
    ngx.header["Content-Type"] = "application/octet-stream"
    ngx.print(value)
    return ngx.exit(ngx.HTTP_OK)
end

local function app_options()
    local id = ngx.ctx.minipaas_app
    local raw = id and store:get("app:" .. id)
    if not raw then
        return false, 0
    end
    local redirect, hsts = raw:match("^([01]):(%d+)$")
    return redirect == "1", tonumber(hsts) or 0
end

-- access phase, after the route chose an app: plain HTTP goes to HTTPS if the app asks
function _M.after_route()
    if ngx.var.https == "on" then
        return
    end
    local redirect = app_options()
    if not redirect then
        return
    end
    local port = tls_port == 443 and "" or (":" .. tls_port)
    -- the request's own URI, as sent: $uri is decoded and normalized (a%2Fb would go to a/b)
    local target = "https://" .. ngx.var.host .. port .. ngx.var.request_uri
    return ngx.redirect(target, 308)
end

-- header filter of app responses: HSTS only over HTTPS, only for apps that ask
function _M.header_filter()
    if ngx.var.https ~= "on" then
        return
    end
    local _, hsts = app_options()
    if hsts > 0 then
        ngx.header["Strict-Transport-Security"] = "max-age=" .. hsts
    end
end

-- control socket: /tls/state, /tls/challenges/<token>

local function reply(status, data)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.print(cjson.encode(data))
    return ngx.exit(ngx.HTTP_OK)
end

function _M.control()
    if not secret or ngx.var.http_x_minipaas_router_secret ~= secret then
        return reply(403, { error = "wrong or missing router secret" })
    end
    local method, uri = ngx.req.get_method(), ngx.var.uri
    if uri == "/tls/state" then
        if method == "GET" then
            local names = 0
            for _, key in ipairs(store:get_keys(0)) do
                if key:sub(1, 5) == "cert:" then
                    names = names + 1
                end
            end
            return reply(200, { version = store:get("version") or cjson.null, names = names })
        end
        if method ~= "PUT" then
            return reply(405, { error = "use GET or PUT" })
        end
        local data, err = read_json()
        local state
        if data then
            state, err = check_state(data, true)
        end
        if not state then
            return reply(400, { error = err })
        end
        local ok, problem = apply(state)
        if not ok then
            return reply(507, { error = problem })
        end
        return reply(200, { ok = true })
    end
    local token = uri:match("^/tls/challenges/([A-Za-z0-9_-]+)$")
    if token and #token <= 256 then
        if method == "DELETE" then
            store:delete("acme:" .. token)
            return reply(200, { ok = true })
        end
        if method ~= "PUT" then
            return reply(405, { error = "use PUT or DELETE" })
        end
        local data, err = read_json()
        if not data then
            return reply(400, { error = err })
        end
        local value = data.key_authorization
        if type(value) ~= "string" or #value > 1024 or not value:find("^[A-Za-z0-9_.-]+$") then
            return reply(400, { error = "key_authorization must be token.thumbprint" })
        end
        local ok, set_err = store:safe_set("acme:" .. token, value, TOKEN_TTL)
        if not ok then
            return reply(507, { error = tostring(set_err) })
        end
        return reply(200, { ok = true })
    end
    return reply(404, { error = "no such TLS control path" })
end

return _M
