-- ex_rewrite.lua: path rewrites before proxying to the "api" tenant.
--
--   /old/<rest>          -> /new/<rest>
--   /v1/users/{id}       -> /users/{id}?version=1 (query kept)
--   /docs                -> 301 redirect to /docs/
--   anything else        -> unchanged

local api = keystone.Proxy("api")
local r = chi.NewRouter()

r:Handle("/old/*", function(w, req)
  req:SetPath("/new/" .. chi.URLParam(req, "*"))
  api(w, req)
end)

r:Get("/v1/users/{id:[0-9]+}", function(w, req)
  local query = req.RawQuery
  req:SetPath("/users/" .. req:URLParam("id"))
  req:SetRawQuery(query == "" and "version=1" or query .. "&version=1")
  api(w, req)
end)

r:Get("/docs", function(w, req) w:Redirect("/docs/", 301) end)

r:Handle("/*", api)
return r
