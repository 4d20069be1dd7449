-- mini-paas: helpers shared by the router's control endpoints (routes, traffic, TLS).

local cjson = require("cjson.safe")

local _M = {}

function _M.is_int(value, low, high)
    return type(value) == "number" and value == math.floor(value) and value >= low
        and value <= high
end

-- The control secret (first line of the file), or nil (then control requests are refused)
function _M.read_secret(path)
    local file = io.open(path, "r")
    if not file then
        ngx.log(ngx.ERR, "router secret ", path, " is missing: control requests are refused")
        return nil
    end
    local value = file:read("*l")
    file:close()
    if not value or #value < 32 then
        ngx.log(ngx.ERR, "router secret in ", path, " is too short: control requests are refused")
        return nil
    end
    return value
end

-- The request's JSON body, or nil and what is wrong with it
function _M.read_json()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then
        -- larger bodies are spooled to a file
        local path = ngx.req.get_body_file()
        local file = path and io.open(path, "rb")
        if file then
            body = file:read("*a")
            file:close()
        end
    end
    if not body then
        return nil, "the request has no body"
    end
    local data, err = cjson.decode(body)
    if data == nil then
        return nil, "body is not JSON: " .. tostring(err)
    end
    return data
end

return _M
