"""The simulator (ctisim): a simulated XiVO CTI server and client, to try the tools without a XiVO.

The server speaks a small subset of the CTI protocol (one JSON object per line, after a
plain-text banner): the login sequence, getlist for users, phones, queues and agents,
ipbxcommand dial and hangup, history, directory and keepalive.  Answers carry the request's
commandid as replyid; every server message carries timenow.  The client plays one short
session against a server (or a proxy in front of one); `ctisim demo` runs both with ctispy
in between.

Modules: protocol (constants, the checks of a request line), pbx (the simulated system),
server, client, demo, tls (certificates and STARTTLS), recorded (a recorded session and the
matching rule), replay_server and replay_client (--replay), and command (the command line).
"""
