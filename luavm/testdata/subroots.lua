-- Subrouter roots: chi's Mount routes both "/p" and "/p/" to the mounted
-- router as "/" (go-chi/chi mux.go, Mount: handle(pattern) and
-- handle(pattern+"/")).
local function say(s) return function(w, req) w:Write(s) end end
local r = chi.NewRouter()

r:Route("/api", function(api)
  api:Get("/", say("api root"))
  api:Get("/x", say("api x"))
end)

r:Route("/files", function(f)
  f:Get("/", say("files root"))
  f:Get("/*", say("files rest"))
end)

r:Route("/only-rest", function(f)
  f:Get("/*", say("only rest"))
end)

local sub = chi.NewRouter()
sub:Get("/", say("mounted root"))
sub:Post("/", say("mounted root post"))
sub:Get("/y", say("mounted y"))
r:Mount("/m", sub)

r:Route("/a", function(a)
  a:Route("/b", function(b)
    b:Get("/", say("ab root"))
  end)
end)

r:Route("/users/{id}", function(u)
  u:Get("/", function(w, req) w:Write("user " .. req:URLParam("id")) end)
end)

r:Mount("/h", function(w, req) w:Write("handler " .. req.Path) end)

return r
