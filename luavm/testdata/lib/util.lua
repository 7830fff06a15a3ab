-- A module: require("lib.util") runs this once per VM.
local M = {}
loads = (loads or 0) + 1
function M.greet(name) return "hello, " .. name end
M.loads = function() return loads end
return M
