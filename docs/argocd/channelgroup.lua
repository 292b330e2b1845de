local hs = { status = "Progressing", message = "Waiting for relink to count the group's connections" }
local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then return c end
  end
  return nil
end
if obj.status == nil then return hs end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then return hs end
local counts = ""
if obj.status.ready ~= nil and obj.status.total ~= nil then
  counts = obj.status.ready .. "/" .. obj.status.total .. " connections ready"
end
local ready, degraded, stalled = condition("Ready"), condition("Degraded"), condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = counts .. "; down: " .. (stalled.message or stalled.reason or "")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = counts
  if degraded ~= nil and degraded.status == "True" then
    hs.message = counts .. "; degraded: " .. (degraded.message or degraded.reason or "")
  end
  return hs
end
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = counts .. "; " .. (ready.message or ready.reason or "")
end
return hs
