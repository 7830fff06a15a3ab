-- ex_maintenance.lua: a maintenance switch in front of the "api" tenant.
--
-- Maintenance is on when KEYSTONE_SCRIPT_MAINTENANCE=1 was set when the
-- script loaded, or while the store key "maintenance" is "on". Operators
-- flip the key without a restart:
--   curl -X PUT -H "X-Maintenance-Token: $TOKEN" https://host/_maintenance/on
--   curl -X PUT -H "X-Maintenance-Token: $TOKEN" https://host/_maintenance/off
-- with TOKEN from KEYSTONE_SCRIPT_MAINTENANCE_TOKEN (the switch is disabled
-- when it is unset). During maintenance every request but /health gets 503
-- with Retry-After.

local forced = keystone.Env("KEYSTONE_SCRIPT_MAINTENANCE") == "1"
local token = keystone.Env("KEYSTONE_SCRIPT_MAINTENANCE_TOKEN")

local function maintenance(next)
  return function(w, req)
    if req.Path ~= "/health" and (forced or keystone.store.Get("maintenance") == "on") then
      w:Header():Set("Retry-After", "300")
      w:JSON(503, { error = "down for maintenance, back soon" })
      return
    end
    next(w, req)
  end
end

local r = chi.NewRouter()

r:Put("/_maintenance/{state:on|off}", function(w, req)
  if token == nil or req:Header():Get("X-Maintenance-Token") ~= token then
    w:JSON(403, { error = "forbidden" })
    return
  end
  keystone.store.Set("maintenance", req:URLParam("state"))
  keystone.Log("warn", "maintenance switched", { state = req:URLParam("state"), by = req.RemoteAddr })
  w:JSON(200, { maintenance = req:URLParam("state") })
end)

r:Group(function(g)
  g:Use(maintenance)
  g:Handle("/*", keystone.Proxy("api"))
end)

return r
