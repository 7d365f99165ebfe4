describe("hooks (defaults)", function()
  local hooks, client

  before_each(function()
    package.loaded["hooks"] = nil
    hooks = require "hooks"
    client = { id = "c1", user_id = "anon-c1", authenticated = false,
               claims = {}, permissions = {}, ctx = {} }
  end)

  it("defines the disconnect, join and leave hooks", function()
    assert.is_function(hooks.on_disconnect)
    assert.is_function(hooks.on_join)
    assert.is_function(hooks.on_leave)
  end)

  it("leaves on_connect undefined, so every connection is accepted", function()
    assert.is_nil(hooks.on_connect)
  end)
end)
