-- ex_mock_api.lua: a JSON API answered entirely from Lua, for development
-- or while the real service is being built. Nothing is proxied.
--
--   GET    /users            list
--   GET    /users/{id}       one user, 404 if unknown
--   POST   /users            create from a JSON body, 201
--   DELETE /users/{id}       204
--
-- Created users live in keystone.store, shared by every VM of the script.

local seed = {
  { id = 1, name = "Ada Lovelace", role = "admin" },
  { id = 2, name = "Grace Hopper", role = "user" },
}

local function find(id)
  local stored = keystone.store.Get("user:" .. id)
  if stored then
    return json.decode(stored)
  end
  if keystone.store.Get("deleted:" .. id) then
    return nil
  end
  return seed[tonumber(id)]
end

local r = chi.NewRouter()
r:Use(function(next)
  return function(w, req)
    w:Header():Set("X-Mock", "true")
    next(w, req)
  end
end)

r:Route("/users", function(users)
  users:Get("/", function(w, req)
    local list = json.array()
    for id = 1, #seed + tonumber(keystone.store.Get("users:created") or 0) do
      local u = find(tostring(id))
      if u then list[#list + 1] = u end
    end
    w:JSON(200, { users = list, count = #list })
  end)

  users:Get("/{id:[0-9]+}", function(w, req)
    local u = find(req:URLParam("id"))
    if u == nil then
      w:JSON(404, { error = "user not found", id = req:URLParam("id") })
      return
    end
    w:JSON(200, u)
  end)

  users:Post("/", function(w, req)
    local body, err = json.decode(req:Body())
    if type(body) ~= "table" or type(body.name) ~= "string" then
      w:JSON(400, { error = "expected a JSON object with a name", detail = err })
      return
    end
    local id = #seed + keystone.store.Incr("users:created", 1)
    local user = { id = id, name = body.name, role = body.role or "user" }
    keystone.store.Set("user:" .. id, json.encode(user))
    w:Header():Set("Location", "/users/" .. id)
    w:JSON(201, user)
  end)

  users:Delete("/{id:[0-9]+}", function(w, req)
    keystone.store.Delete("user:" .. req:URLParam("id"))
    keystone.store.Set("deleted:" .. req:URLParam("id"), "1")
    w:WriteHeader(204)
  end)
end)

r:NotFound(function(w, req)
  w:JSON(404, { error = "no such endpoint", path = req.Path })
end)

return r
