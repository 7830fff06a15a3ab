-- Handlers that wait on Go calls: the Lua clock must not run meanwhile.
local r = chi.NewRouter()
r:Get("/slow-proxy", keystone.Proxy("slow"))
r:Get("/slow-wrapped", function(w, req)
  keystone.Proxy("slow")(w, req)
  w:Header():Set("X-Wrapped", "1")
end)
r:Get("/slow-http", function(w, req)
  local res, err = keystone.http.Get(keystone.Env("KEYSTONE_SCRIPT_SLOW") .. "/x", { timeout = 2 })
  w:Write(err or res.body)
end)
return r
