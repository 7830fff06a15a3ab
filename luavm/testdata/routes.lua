-- Every router method and pattern form, middleware order, nesting with
-- With, Group, Route and Mount, NotFound and MethodNotAllowed.
local r = chi.NewRouter()

-- tag appends its name to X-Trace, so responses show the middleware order.
local function tag(name)
  return function(next)
    return function(w, req)
      local prev = w:Header():Get("X-Trace")
      if prev == "" then
        w:Header():Set("X-Trace", name)
      else
        w:Header():Set("X-Trace", prev .. "," .. name)
      end
      next(w, req)
    end
  end
end

local function say(text)
  return function(w, req) w:Write(text) end
end

r:Use(tag("root1"), tag("root2"))

r:Get("/get", say("get"))
r:Post("/post", say("post"))
r:Put("/put", say("put"))
r:Patch("/patch", say("patch"))
r:Delete("/delete", say("delete"))
r:Head("/head", function(w, req) w:Header():Set("X-Head", "yes") end)
r:Options("/options", say("options"))
r:Connect("/connect", say("connect"))
r:Trace("/trace", say("trace"))
r:Method("purge", "/purge", say("purge"))
r:MethodFunc("REPORT", "/report", say("report"))
r:Handle("/any", function(w, req) w:Write("any " .. req.Method) end)
r:HandleFunc("/anyfunc", function(w, req) w:Write("anyfunc " .. req.Method) end)
-- As in chi, a later registration replaces the earlier one for its method.
r:Get("/any", say("get replaces any"))

r:Get("/users/{id}", function(w, req) w:Write("user " .. req:URLParam("id")) end)
r:Get("/users/{id}/posts/{post:[0-9]+}", function(w, req)
  w:Write(chi.URLParam(req, "id") .. "/" .. chi.URLParam(req, "post"))
end)
r:Get("/files/*", function(w, req) w:Write("file " .. chi.URLParam(req, "*")) end)
r:Get("/files/special", say("special file"))
r:Get("/num/{n:[0-9]+}", function(w, req) w:Write("num " .. req:URLParam("n")) end)
r:Get("/items/{name}.json", function(w, req) w:Write("item " .. req:URLParam("name")) end)

r:With(tag("with1")):With(tag("with2")):Get("/with", say("with"))

r:With(function(next)
  return function(w, req)
    w:WriteHeader(401)
    w:Write("denied")
  end
end):Get("/early", say("unreachable"))

r:Group(function(g)
  g:Use(tag("group"))
  g:Get("/group", say("group"))
end)

r:Route("/api", function(api)
  api:Use(tag("api"))
  api:Get("/", say("api root"))
  api:Get("/v1/{id}", function(w, req) w:Write("api v1 " .. req:URLParam("id")) end)
  api:Route("/nested", function(n)
    n:Use(tag("nested"))
    n:Get("/deep", say("deep"))
  end)
  api:NotFound(function(w, req)
    w:WriteHeader(404)
    w:Write("api not found")
  end)
end)

local legacy = chi.NewRouter()
legacy:Use(tag("legacy"))
legacy:Get("/", say("legacy root"))
legacy:Get("/old", say("legacy old"))
legacy:Handle("/*", keystone.Proxy("legacy"))
r:Mount("/legacy", legacy)

r:Mount("/mounted", keystone.Proxy("api2"))

r:NotFound(function(w, req)
  w:WriteHeader(404)
  w:Write("custom not found " .. req.Path)
end)
r:MethodNotAllowed(function(w, req)
  w:WriteHeader(405)
  w:Write("custom 405")
end)

return r
