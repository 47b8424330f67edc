/* The README's example: send a request carrying a reply_to connection, answer
 * through it.  Built and run by `make test` so the README never goes stale. */
#include <stdio.h>
#include "chan.h"

int main(void)
{
	chan_conn *client, *server, *reply_to, *answer;
	chan_msg *req, *got;
	chan_value *root;

	chan_conn_pair(&client, &server);
	chan_conn_pair(&reply_to, &answer);          /* a fresh reply endpoint */

	req = chan_msg_new(NULL);                    /* {"op": "get", "reply_to": <conn>} */
	root = chan_map(req);
	chan_map_put(root, "op", chan_string(req, "get"));
	chan_map_put(root, "reply_to", chan_conn_handle(req, &answer)); /* moves it */
	chan_msg_set_root(req, root);
	if (chan_conn_send(client, req, -1) < 0)     /* the fd rides out of band */
		return 1;
	chan_msg_free(req);                          /* closes our copy of `answer` */

	chan_conn_recv(server, &got, -1);            /* server side: answer through reply_to */
	chan_conn *back;
	chan_conn_from_value(chan_map_get(chan_msg_root(got), "reply_to"), &back);
	chan_msg *ok = chan_msg_new(NULL);
	chan_msg_set_root(ok, chan_string(ok, "42"));
	chan_conn_send(back, ok, -1);

	chan_msg *reply;                             /* client side: the answer arrives */
	int r = chan_conn_recv(reply_to, &reply, 1000);
	printf("reply: %s (%s)\n", r ? "none" : chan_value_string(chan_msg_root(reply), NULL),
	       chan_errname(r));
	chan_msg_free(reply); chan_msg_free(ok); chan_msg_free(got);
	chan_conn_free(back); chan_conn_free(reply_to); chan_conn_free(server); chan_conn_free(client);
	return r ? 1 : 0;
}
