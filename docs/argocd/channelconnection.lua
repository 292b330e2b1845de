local hs = { status = "Progressing", message = "Waiting for the first check" }
local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then return c end
  end
  return nil
end
local function says(c)
  local m = c.reason or ""
  if c.message ~= nil and c.message ~= "" then m = m .. ": " .. c.message end
  return m
end
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Checks are suspended (spec.suspend)"
  return hs
end
if obj.status == nil then return hs end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "Waiting for relink to check the latest spec"
  return hs
end
local ready, stalled, reconciling = condition("Ready"), condition("Stalled"), condition("Reconciling")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = says(stalled)
  if obj.status.reauthUrl ~= nil and obj.status.reauthUrl ~= "" then
    hs.message = hs.message .. " (re-authorize: " .. obj.status.reauthUrl .. ")"
  end
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = says(ready)
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = says(reconciling)
  return hs
end
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = says(ready)
end
return hs
