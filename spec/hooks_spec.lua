describe("hooks (defaults)", function()
  local hooks, client

  before_each(function()
    package.loaded["hooks"] = nil
    hooks = require "hooks"
    client = { id = "c1", user_id = "anon-c1", authenticated = false,
               claims = {}, permissions = {}, ctx = {} }
  end)

  it("defines the four hooks", function()
    assert.is_function(hooks.on_connect)
    assert.is_function(hooks.on_disconnect)
    assert.is_function(hooks.on_join)
    assert.is_function(hooks.on_leave)
  end)

  it("accepts every connection", function()
    assert.equal(0, select("#", hooks.on_connect(client)))
  end)
end)
