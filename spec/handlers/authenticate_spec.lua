local fake = require "spec.support.fake_gohub"

describe("handlers.authenticate", function()
  local authenticate, alice

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.authenticate"] = nil
    authenticate = require "handlers.authenticate"
    alice = fake.add_client { id = "c1" }
  end)

  it("refuses a token with 2003 (in-band auth not available yet)", function()
    local ok, code, message = fake.call(authenticate, alice,
                                        { token = "a.b.c" })
    assert.is_nil(ok)
    assert.equal(2003, code)
    assert.equal("invalid token", message)
  end)

  it("rejects a missing token", function()
    local ok, code, message = fake.call(authenticate, alice, {})
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("token must be a string", message)
  end)

  it("rejects a token that is not a string", function()
    local ok, code, message = fake.call(authenticate, alice, { token = 7 })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("token must be a string", message)
  end)

  it("rejects data that is not an object", function()
    local ok, code = fake.call(authenticate, alice, "token")
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)
end)
