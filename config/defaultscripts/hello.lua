-- The default script: GET /hello answers from Lua, everything else falls through.
local r = chi.NewRouter()
r:Get("/hello", function(w, req)
  w:Header():Set("Content-Type", "text/plain; charset=utf-8")
  w:Write("Hello World")
end)
return r
