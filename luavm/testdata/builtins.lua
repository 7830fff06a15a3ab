-- Every built-in: json, keystone.store, keystone.http, keystone.Log,
-- keystone.Env, keystone.Proxy, require.
local util = require("lib.util")
local again = require("lib.util")
local r = chi.NewRouter()

r:Get("/json", function(w, req)
  local encoded = json.encode({
    s = "a\"b\n", n = 42, f = 1.5, t = true, arr = { 1, 2, 3 }, empty = {},
    empty_arr = json.array(), null = json.null, nested = { k = { "x" } },
  })
  local decoded, err = json.decode('{"a":[1,null,3],"b":{"c":"d"},"e":null,"f":false}')
  local bad, bad_err = json.decode("{nope")
  local cycle = {}
  cycle.self = cycle
  local ok_cycle, cycle_err = pcall(json.encode, cycle)
  local ok_fn = pcall(json.encode, { f = print })
  w:JSON(200, {
    encoded = encoded,
    a2 = decoded.a[2] == nil, a3 = decoded.a[3], c = decoded.b.c, e = decoded.e == nil, f = decoded.f,
    reencoded = json.encode(decoded.a),
    bad = bad == nil, bad_err = bad_err ~= nil,
    cycle = not ok_cycle and cycle_err:find("cycle") ~= nil,
    fn = not ok_fn,
    err = err,
  })
end)

r:Get("/store", function(w, req)
  local s = keystone.store
  s.Set("k", "v")
  local v = s.Get("k")
  s.Set("num", 5)
  local a = s.Incr("counter")
  local b = s.Incr("counter", 10)
  local c = s.Incr("counter", -1, 60)
  local bad, bad_err = s.Incr("k", 1)
  s.Delete("k")
  w:JSON(200, { v = v, num = s.Get("num"), a = a, b = b, c = c, bad = bad == nil, bad_err = bad_err, gone = s.Get("k") == nil })
end)

r:Get("/hits", function(w, req)
  w:Write(tostring(keystone.store.Incr("hits")))
end)

r:Get("/http", function(w, req)
  local base = keystone.Env("KEYSTONE_SCRIPT_UPSTREAM")
  local res, err = keystone.http.Get(base .. "/sub?x=1", { headers = { ["X-Sub"] = "yes" }, timeout = 2 })
  local post = keystone.http.Post(base .. "/post", { body = "payload" })
  local put = keystone.http.Do("put", base .. "/put", {})
  local none, none_err = keystone.http.Get("http://127.0.0.1:1/unreachable", { timeout = 0.5 })
  local sub = json.decode(res.body)
  w:JSON(200, {
    status = res.status, upstream = res.headers["X-Upstream"], sub_path = sub.path, sub_query = sub.query,
    sub_header = sub.headers["X-Sub"], post_body = json.decode(post.body).body, put_method = json.decode(put.body).method,
    unreachable = none == nil and none_err ~= nil, err = err,
  })
end)

r:Get("/log", function(w, req)
  keystone.Log("info", "hello from lua", { user = "bob", n = 3, ok = true })
  keystone.Log("debug", "debug line")
  print("printed", 1)
  w:Write("logged")
end)

r:Get("/env", function(w, req)
  local ok = pcall(keystone.Env, "HOME")
  w:Write(tostring(keystone.Env("KEYSTONE_SCRIPT_GREETING")) .. " " .. tostring(keystone.Env("KEYSTONE_SCRIPT_UNSET")) .. " " .. tostring(ok))
end)

r:Get("/require", function(w, req)
  w:Write(util.greet("lua") .. " " .. tostring(util == again) .. " " .. util.loads())
end)

r:Get("/proxy-default", keystone.Proxy())
r:Get("/proxy-url", keystone.Proxy(keystone.Env("KEYSTONE_SCRIPT_UPSTREAM")))
r:Get("/proxy-inline", function(w, req)
  keystone.Proxy("api2")(w, req)
  w:Header():Set("X-After", "1")
end)

return r
