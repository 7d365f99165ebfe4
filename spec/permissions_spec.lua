describe("permissions (default policy)", function()
  local permissions

  before_each(function()
    package.loaded["permissions"] = nil
    permissions = require "permissions"
  end)

  it("grants a permission the client holds", function()
    local client = { permissions = { "join:room", "send:message" } }
    assert.is_true(permissions.can(client, "send:message", "lobby"))
  end)

  it("denies a permission the client does not hold", function()
    local client = { permissions = { "join:room" } }
    assert.is_false(permissions.can(client, "delete:room", "lobby"))
  end)

  it("grants everything to admin:system", function()
    local client = { permissions = { "admin:system" } }
    assert.is_true(permissions.can(client, "broadcast"))
  end)

  it("denies everything to a client without permissions", function()
    assert.is_false(permissions.can({ permissions = {} }, "join:room", "x"))
  end)

  it("denies when client.permissions is not a table", function()
    assert.is_false(permissions.can({}, "join:room", "x"))
  end)

  it("does not match permissions by prefix", function()
    local client = { permissions = { "join" } }
    assert.is_false(permissions.can(client, "join:room", "x"))
  end)
end)
