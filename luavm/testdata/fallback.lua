-- No NotFound: unmatched requests go to Options.Fallback inside the root
-- middleware, and a path that only other methods match is a 405.
local r = chi.NewRouter()
r:Use(function(next)
  return function(w, req)
    w:Header():Set("X-Root-Middleware", "1")
    next(w, req)
  end
end)
r:Get("/only-get", function(w, req) w:Write("got") end)
r:Post("/only-get/{id}", function(w, req) w:Write("posted") end)
return r
