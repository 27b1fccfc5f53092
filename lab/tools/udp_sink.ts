/**
 * A UDP sink: prints one JSON line per datagram it receives, so a test can
 * check that each payload arrived exactly once.
 *
 *     udp_sink.ts --port 7000 [--max-seconds 120]
 *       {"event":"listening","port":7000}
 *       {"from":"172.16.3.2:40001","len":12,"b64":"…"}
 *
 * @module
 */
import dgram from "node:dgram";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: "7000" },
    "max-seconds": { type: "string", default: "120" },
  },
});
const port = Number(values.port);
// A forgotten sink must not outlive the test that started it by much.
setTimeout(() => Deno.exit(0), Number(values["max-seconds"]) * 1000);

const socket = dgram.createSocket("udp4");
socket.on("message", (message, remote) => {
  console.log(JSON.stringify({
    from: `${remote.address}:${remote.port}`,
    len: message.byteLength,
    b64: message.toString("base64"),
  }));
});
socket.on("error", (error) => {
  console.error(`udp_sink: ${error.message}`);
  Deno.exit(1);
});
socket.bind(port, "0.0.0.0", () => console.log(JSON.stringify({ event: "listening", port })));
