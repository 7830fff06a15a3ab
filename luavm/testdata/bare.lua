-- No middleware and no NotFound: misses and the proxy route never take a VM.
local r = chi.NewRouter()
r:Get("/hello", function(w, req) w:Write("Hello World") end)
r:Handle("/proxied/*", keystone.Proxy("api"))
return r
