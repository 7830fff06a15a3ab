-- Limits: every route here misbehaves in one way; the gateway must answer
-- and keep serving.
local r = chi.NewRouter()

r:Get("/ok", function(w, req) w:Write("ok") end)

r:Get("/loop", function(w, req)
  while true do end
end)

-- pcall cannot swallow the deadline: every instruction after it raises again.
r:Get("/pcall-loop", function(w, req)
  while true do
    pcall(function() while true do end end)
  end
end)

r:Get("/error", function(w, req)
  w:Header():Set("X-Leak", "should not reach the client")
  error("boom")
end)

r:Get("/nil", function(w, req)
  local t = nil
  return t.field
end)

r:Get("/stack", function(w, req)
  local function f(n) return f(n + 1) + 1 end
  f(1)
end)

r:Get("/rep", function(w, req)
  w:Write(string.rep("x", 1e10))
end)

r:Get("/rep-method", function(w, req)
  w:Write(("abc"):rep(1e9))
end)

r:Get("/format", function(w, req)
  local s = string.rep("y", 1e6)
  w:Write(string.format(string.rep("%s", 100), s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s))
end)

r:Get("/concat", function(w, req)
  local big = string.rep("z", 1e6)
  local t = {}
  for i = 1, 100 do t[i] = big end
  w:Write(table.concat(t))
end)

r:Get("/gsub", function(w, req)
  local s = string.rep("a", 1e6)
  w:Write((s:gsub("a", string.rep("b", 100))))
end)

r:Get("/gsub-ok", function(w, req)
  local s, n = ("hello world"):gsub("(%w+)", "<%1>")
  local t = ("a=1, b=2"):gsub("(%w+)=(%w+)", "%2=%1")
  local f = ("abc"):gsub("%w", function(c) return c:upper() .. "." end)
  local m = ("$x $y"):gsub("%$(%w+)", {x = "1"})
  local words = {}
  for word in ("one two  three"):gmatch("%a+") do words[#words + 1] = word end
  w:Write(s .. " " .. n .. " " .. t .. " " .. f .. " " .. m .. " " .. table.concat(words, ","))
end)

r:Get("/json", function(w, req)
  local big = string.rep("j", 1e6)
  local t = {}
  for i = 1, 50 do t[i] = big end
  w:Write(json.encode(t))
end)

r:Get("/double", function(w, req)
  local s = "x"
  while true do s = s .. s end
end)

r:Get("/write", function(w, req)
  local chunk = string.rep("w", 1e6)
  for i = 1, 100 do w:Write(chunk) end
end)

return r
