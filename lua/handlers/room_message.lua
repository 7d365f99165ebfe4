-- room_message {room_id, content} -> pushed to the room's members as
-- room_message {room_id, content, sender_id, timestamp}; the sender gets an
-- ack (when it sent a message_id). Needs send:message, and membership when
-- rooms.members_only_send is on.

local gohub = require "gohub"
local validate = require "lib.validate"
local room_errors = require "lib.room_errors"

-- localised: this handler runs for every chat message, and each table
-- lookup saved is interpreter work saved (the tables live as long as the VM)
local errors = gohub.errors
local rooms = gohub.rooms
local rooms_config = gohub.config.rooms
local can = gohub.can
local now = gohub.now

local M = {}

-- content is passed on untouched: it arrives as a raw JSON value (checked
-- but not decoded into Lua tables) and is sent on byte for byte
M.raw = { "content" }


function M.handle(client, data)
  local bad = validate.object(data)
      or validate.room_id(data, "room_id")
      or validate.present(data, "content")
  if bad then
    return gohub.error(errors.INVALID_FORMAT, bad)
  end

  local room_id = data.room_id
  if not can(client, "send:message", room_id) then
    return gohub.error(errors.FORBIDDEN, "forbidden")
  end
  -- membership implies the room exists: the lookup is only needed to tell
  -- 3000 from 3003 on the error path
  if rooms_config.members_only_send then
    if not rooms.is_member(client.id, room_id) then
      if not rooms.get(room_id) then
        return gohub.error(errors.ROOM_NOT_FOUND, "room not found")
      end
      return gohub.error(errors.NOT_IN_ROOM, "not in room")
    end
  elseif not rooms.get(room_id) then
    return gohub.error(errors.ROOM_NOT_FOUND, "room not found")
  end

  local exclude = client.id
  if rooms_config.echo_to_sender then
    exclude = nil
  end

  local sent, err = rooms.publish(room_id, "room_message", {
    room_id = room_id,
    content = data.content,   -- the client's JSON, byte for byte
    sender_id = client.user_id,
    timestamp = now(),
  }, exclude)
  if not sent then
    return room_errors.reply(err)
  end
end


return M
