-- Hammered by 50 goroutines: a middleware, a store counter, a JSON answer.
local r = chi.NewRouter()
r:Use(function(next)
  return function(w, req)
    req.Context.seen = true
    next(w, req)
  end
end)
r:Get("/count/{worker}", function(w, req)
  local n = keystone.store.Incr("hits")
  keystone.store.Incr("worker:" .. req:URLParam("worker"))
  w:JSON(200, { n = n, seen = req.Context.seen })
end)
return r
