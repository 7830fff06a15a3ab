-- Counts visits in keystone.store: on Redis, so both instances count one
-- number.
local r = chi.NewRouter()
r:Get("/", function(w, req)
  local n = keystone.store.Incr("hits", 1, 3600)
  w:Write("Hello from Keystone, visit " .. tostring(n) .. "\n")
end)
return r
