-- ex_ab_split.lua: an A/B split between two tenants by cookie.
--
-- A client without an "ab" cookie is assigned a variant (10% "b") and gets
-- the cookie, so it stays on its variant. Variant "a" goes to the "api"
-- tenant's upstreams, "b" to "api-canary"'s. The response says which one
-- served it.

local CANARY_SHARE = 0.10
local variants = {
  a = keystone.Proxy("api"),
  b = keystone.Proxy("api-canary"),
}

local r = chi.NewRouter()

r:Handle("/*", function(w, req)
  local variant = req:Cookie("ab")
  if variants[variant] == nil then
    variant = math.random() < CANARY_SHARE and "b" or "a"
    w:Header():Add("Set-Cookie", "ab=" .. variant .. "; Path=/; Max-Age=86400; HttpOnly")
  end
  req:Header():Set("X-AB-Variant", variant)
  variants[variant](w, req)
  w:Header():Set("X-AB-Variant", variant)
end)

return r
