-- Every req field and method, every w method.
local r = chi.NewRouter()

r:Post("/echo/{id}", function(w, req)
  local h = req:Header()
  w:JSON(201, {
    method = req.Method,
    host = req.Host,
    path = req.Path,
    raw_query = req.RawQuery,
    remote = req.RemoteAddr,
    q = req:Query("q"),
    missing = req:Query("nope"),
    body = req:Body(),
    id = req:URLParam("id"),
    param_missing = req:URLParam("nope"),
    one = h:Get("X-One"),
    multi = h:Values("X-Multi"),
    cookie = req:Cookie("session"),
  })
end)

r:Get("/headers", function(w, req)
  local h = req:Header()
  -- fasthttp's Del may reorder the remaining fields, so it comes first.
  h:Del("X-Gone")
  h:Set("X-Set", "1")
  h:Add("X-Added", "a")
  h:Add("X-Added", "b")
  local out = w:Header()
  out:Set("X-Out", "v")
  out:Add("X-Multi-Out", "1")
  out:Add("X-Multi-Out", "2")
  out:Set("X-Tmp", "t")
  out:Del("X-Tmp")
  w:Write(h:Get("X-Set") .. "|" .. table.concat(h:Values("X-Added"), ",") .. "|" .. h:Get("X-Gone")
    .. "|" .. out:Get("X-Out") .. "|" .. #out:Values("X-Multi-Out") .. "|" .. out:Get("X-Tmp"))
end)

r:Get("/status", function(w, req)
  w:WriteHeader(418)
  w:Write("a")
  w:Write("b")
  w:Write(" " .. w:Status() .. " " .. w:Body())
end)

r:Get("/setbody", function(w, req)
  w:Write("old")
  w:SetBody("new")
end)

r:Get("/redirect", function(w, req) w:Redirect("/elsewhere") end)
r:Get("/redirect301", function(w, req) w:Redirect("https://example.com/x", 301) end)

local function set_user(next)
  return function(w, req)
    req.Context.user = "bob"
    next(w, req)
  end
end
r:With(set_user):Get("/context", function(w, req) w:Write("user=" .. req.Context.user) end)
r:Get("/context-fresh", function(w, req) w:Write("user=" .. tostring(req.Context.user)) end)

-- Rewrites reach the upstream: path, query, body and headers.
r:Post("/rewrite", function(w, req)
  req:SetPath("/rewritten/path")
  req:SetRawQuery("a=1")
  req:SetBody("new body")
  req:Header():Set("X-Rewritten", "1")
  keystone.Proxy("api")(w, req)
end)
r:Get("/setquery", function(w, req)
  req:SetQuery("b=2")
  keystone.Proxy()(w, req)
end)

r:Get("/bad-header", function(w, req)
  w:Header():Set("X-Evil", "a\r\nInjected: yes")
end)

return r
