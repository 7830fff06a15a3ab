-- Each probe tries to reach outside the sandbox; /probe/{name} answers
-- "blocked" when it fails.
local r = chi.NewRouter()

local probes = {
  os_execute = function() return os.execute("true") end,
  os_exit = function() os.exit(1) end,
  os_getenv = function() return os.getenv("HOME") end,
  os_remove = function() return os.remove("/tmp/x") end,
  io_open = function() return io.open("/etc/passwd") end,
  require_parent = function() return require("../x") end,
  require_abs = function() return require("/etc/passwd") end,
  require_missing = function() return require("lib.nope") end,
  loadstring = function() return loadstring("return 1") end,
  load = function() return load(function() return nil end) end,
  dofile = function() return dofile("/etc/passwd") end,
  loadfile = function() return loadfile("/etc/passwd") end,
  debug = function() return debug.getinfo(1) end,
  package = function() return package.loaded end,
  collectgarbage = function() collectgarbage() end,
  setfenv = function() setfenv(1, {}) end,
  getfenv = function() return getfenv(1) end,
  string_dump = function() return string.dump(print) end,
  coroutine = function() return coroutine.create(print) end,
  module = function() module("x") end,
  newproxy = function() return newproxy() end,
  env_home = function() return keystone.Env("HOME") end,
  new_router_at_request = function() return chi.NewRouter() end,
  os_time = function() return os.time() end,
  os_date = function() return os.date("%Y") end,
  os_clock = function() return os.clock() end,
  math_random = function() math.randomseed(1) return math.random(1, 10) end,
}

r:Get("/probe/{name}", function(w, req)
  local probe = probes[req:URLParam("name")]
  if probe == nil then
    w:WriteHeader(404)
    return
  end
  local ok = pcall(probe)
  w:Write(ok and "allowed" or "blocked")
end)

r:Get("/metatable", function(w, req)
  w:Write(tostring(getmetatable(req)) .. " " .. tostring(getmetatable(w)))
end)

-- Globals set while serving stay in that VM only.
r:Get("/global", function(w, req)
  counter = (counter or 0) + 1
  w:Write(tostring(counter))
end)

return r
