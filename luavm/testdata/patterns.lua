-- Lua patterns: string.find, match, gmatch, gsub, byte and unpack checked
-- against Lua 5.1/5.2 results. GET /run answers "ok" or the failures, one
-- per line.
local r = chi.NewRouter()

local function show(...)
  local n = select("#", ...)
  local t = {}
  for i = 1, n do t[i] = tostring((select(i, ...))) end
  return table.concat(t, ",")
end

local function collect(iter)
  local t = {}
  for a, b in iter do
    t[#t + 1] = b and (a .. "=" .. b) or a
  end
  return table.concat(t, "|")
end

local function err(f, ...)
  local ok, msg = pcall(f, ...)
  if ok then return "no error" end
  return msg
end

local cases = {
  -- find
  {function() return show(string.find("hello world", "o w")) end, "5,7"},
  {function() return show(string.find("hello", "l+")) end, "3,4"},
  {function() return show(string.find("hello", "(l)(l)")) end, "3,4,l,l"},
  {function() return show(string.find("hello", "()ll()")) end, "3,4,3,5"},
  {function() return show(string.find("a.b", ".", 1, true)) end, "2,2"},
  {function() return show(string.find("a.b", "%.")) end, "2,2"},
  {function() return show(string.find("abc", "b", -1)) end, "nil"},
  {function() return show(string.find("abc", "c", -1)) end, "3,3"},
  {function() return show(string.find("abc", "", 10)) end, "nil"},
  {function() return show(string.find("abc", "", 4)) end, "4,3"},
  {function() return show(("abc"):find("^b")) end, "nil"},
  {function() return show(("abc"):find("b", 2)) end, "2,2"},
  -- match
  {function() return show(string.match("  trim me  ", "^%s*(.-)%s*$")) end, "trim me"},
  {function() return show(string.match("key=value", "(%w+)=(%w+)")) end, "key,value"},
  {function() return show(string.match("2024-01-02", "(%d+)-(%d+)-(%d+)")) end, "2024,01,02"},
  {function() return show(string.match("THE (quick) fox", "%((%a+)%)")) end, "quick"},
  {function() return show(string.match("f(a(b)c)d", "%b()")) end, "(a(b)c)"},
  {function() return show(string.match("THE (quick) fox", "%f[%a]%a+", 5)) end, "quick"},
  {function() return show(string.match("hello", "^(h)(e)")) end, "h,e"},
  {function() return show(string.match("aaa", "a-b")) end, "nil"},
  {function() return show(string.match("aaab", "a-b")) end, "aaab"},
  {function() return show(string.match("x = 10", "()=()")) end, "3,4"},
  {function() return show(string.match("abcabc", "(abc)%1")) end, "abc"},
  {function() return show(string.match("[x]", "[%[]")) end, "["},
  {function() return show(string.match("a]b", "[]]")) end, "]"},
  {function() return show(string.match("a-b", "[a%-]+")) end, "a-"},
  {function() return show(string.match("z", "[^a-y]")) end, "z"},
  {function() return show(string.match("", ".*")) end, ""},
  {function() return show(string.match("ab12", "%a*")) end, "ab"},
  {function() return show(string.match("ab12", "%d?%a+%d+$")) end, "ab12"},
  {function() return show(string.match("x$y", "%$(.)")) end, "y"},
  {function() return show(string.match("a$", "a$")) end, "nil"},
  {function() return show(string.match("a$b", "a$b")) end, "a$b"},
  {function() return show(string.match(" \t\n", "^%s+$")) end, " \t\n"},
  {function() return show(string.match("Hello", "%u%l+")) end, "Hello"},
  {function() return show(string.match("0xFF;", "0x(%x+)%p")) end, "FF"},
  {function() return show(string.match("a\0b", "%z")) end, "\0"},
  -- gmatch
  {function() return collect(("one two  three"):gmatch("%a+")) end, "one|two|three"},
  {function() return collect(("a=1, b=2"):gmatch("(%w+)=(%w+)")) end, "a=1|b=2"},
  {function() return collect(("abc"):gmatch("")) end, "|||"},
  {function() return collect(("a^a"):gmatch("^a")) end, "^a"},
  -- gsub
  {function() return show(("hello world"):gsub("o", "0")) end, "hell0 w0rld,2"},
  {function() return show(("hello"):gsub("", "-")) end, "-h-e-l-l-o-,6"},
  {function() return show(("abc"):gsub("%w", "%0%0")) end, "aabbcc,3"},
  {function() return show(("hello world"):gsub("(%w+)", "<%1>")) end, "<hello> <world>,2"},
  {function() return show(("abc"):gsub("b", "%%")) end, "a%c,1"},
  {function() return show(("hello world"):gsub("%w+", {hello = "HI"})) end, "HI world,2"},
  {function() return show(("abc"):gsub("%w", function(c) return c:upper() end)) end, "ABC,3"},
  {function() return show(("abc"):gsub("%w", function() return nil end)) end, "abc,3"},
  {function() return show(("aaa"):gsub("a", "b", 2)) end, "bba,2"},
  {function() return show(("  x  "):gsub("^%s+", "")) end, "x  ,1"},
  {function() return show(("k=v"):gsub("(%w)=(%w)", "%2=%1")) end, "v=k,1"},
  {function() return err(string.gsub, "abc", ".", {a = 1, b = true}) end, "E:invalid replacement value (a boolean)"},
  -- upper, lower, reverse: bytewise, C locale
  {function() return ("aBc1\195\169-z"):upper() end, "ABC1\195\169-Z"},
  {function() return ("aBc1\195\137-Z"):lower() end, "abc1\195\137-z"},
  {function() return ("abc"):reverse() .. (""):reverse() end, "cba"},
  {function() return tostring(#string.rep("ab", 100000):upper()) end, "200000"},
  -- table.sort
  {function() local t = {3, 1, 2} table.sort(t) return table.concat(t, ",") end, "1,2,3"},
  {function() local t = {"b", "c", "a"} table.sort(t, function(a, b) return a > b end) return table.concat(t, ",") end, "c,b,a"},
  {function() local t = {} table.sort(t) return tostring(#t) end, "0"},
  {function() return err(table.sort, {1, "x", 2}) end, "E:attempt to compare"},
  -- byte, unpack
  {function() return show(string.byte("abc")) end, "97"},
  {function() return show(string.byte("abc", 1, -1)) end, "97,98,99"},
  {function() return show(string.byte("abc", -1)) end, "99"},
  {function() return show(string.byte("abc", 10)) end, ""},
  {function() return show(unpack({1, 2, 3})) end, "1,2,3"},
  {function() return show(unpack({1, 2, 3}, 2)) end, "2,3"},
  -- errors
  {function() return err(string.match, "x", "[a") end, "E:malformed pattern (missing ']')"},
  {function() return err(string.match, "x", "%") end, "E:malformed pattern (ends with '%')"},
  {function() return err(string.match, "x", "(x") end, "E:unfinished capture"},
  {function() return err(string.match, "x", "x)") end, "E:invalid pattern capture"},
  {function() return err(string.match, "x", "%1") end, "E:invalid capture index %1"},
  {function() return err(string.match, "x", "%b") end, "E:missing arguments to '%b'"},
  {function() return err(string.match, "x", "%fx") end, "E:missing '[' after '%f' in pattern"},
  {function() return err(string.match, string.rep("a", 300), string.rep("a?", 300)) end, "E:pattern too complex"},
  {function() return err(string.find, string.rep("x", 40), string.rep("(x)", 33)) end, "E:too many captures"},
  {function() return err(string.byte, string.rep("x", 9000), 1, -1) end, "E:string slice too long"},
  {function() return err(unpack, {}, 1, 1e9) end, "E:too many results to unpack"},
}

r:Get("/run", function(w, req)
  local bad = {}
  for i, c in ipairs(cases) do
    local ok, got = pcall(c[1])
    if not ok then got = "error: " .. tostring(got) end
    local want = c[2]
    local pass
    if want:sub(1, 2) == "E:" then
      pass = got:find(want:sub(3), 1, true) ~= nil
    else
      pass = got == want
    end
    if not pass then
      bad[#bad + 1] = i .. ": got " .. string.format("%q", got) .. ", want " .. string.format("%q", want)
    end
  end
  if #bad == 0 then
    w:Write("ok")
  else
    w:Write(table.concat(bad, "\n"))
  end
end)

-- A body that makes the trim idiom backtrack quadratically: one
-- non-space byte, a long run of spaces, another non-space byte.
r:Post("/trim", function(w, req)
  w:Write(req:Body():match("^%s*(.-)%s*$"))
end)

r:Post("/bytes", function(w, req)
  local t = {req:Body():byte(1, -1)}
  w:Write(tostring(#t))
end)

r:Post("/gsub-fn", function(w, req)
  local s = req:Body():gsub(".", function(c) return c end)
  w:Write(tostring(#s))
end)

return r
