-- Loaded with PathPrefix "/api": routes are relative to it.
local r = chi.NewRouter()
r:Get("/", function(w, req) w:Write("prefix root " .. req.Path) end)
r:Get("/hello", function(w, req) w:Write("hello " .. req.Path) end)
r:Route("/v1", function(v1)
  v1:Get("/{id}", function(w, req) w:Write("v1 " .. req:URLParam("id")) end)
end)
return r
