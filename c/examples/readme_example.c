/* The README's example: send a request carrying a reply_to connection, answer
 * through it.  Built and run by `make test` so the README never goes stale. */
#include <stdio.h>
#include "chan.h"

int main(void)
{
	chan_conn *client, *server, *reply_to, *answer, *back;
	chan_msg *req, *got, *ok, *reply;
	chan_value *root;
	const char *text;
	int r;

	chan_conn_pair(&client, &server);
	chan_conn_pair(&reply_to, &answer);           /* a fresh reply endpoint */

	req = chan_msg_new(NULL);                     /* {"op": "get", "reply_to": <conn>} */
	root = chan_map(req);
	chan_map_put(root, "op", chan_string(req, "get"));
	chan_map_put(root, "reply_to", chan_handle_move_conn(req, &answer)); /* moves it in */
	if ((r = chan_msg_set_root(req, root)) < 0) { /* every builder error lands here */
		fprintf(stderr, "%s: %s\n", chan_errname(r), chan_msg_error_message(req));
		return 1;
	}
	chan_conn_send(client, req, -1);              /* the fd rides out of band */
	chan_msg_free(req);                           /* closes our copy of `answer` */

	chan_conn_recv(server, -1, &got);             /* server: a live connection arrives */
	chan_map_move_conn(chan_msg_root(got), "reply_to", &back);
	ok = chan_msg_new(NULL);
	chan_msg_set_root(ok, chan_string(ok, "42"));
	chan_conn_send(back, ok, -1);

	r = chan_conn_recv(reply_to, 1000, &reply);   /* client: the answer */
	if (r == 0)
		r = chan_value_get_string(chan_msg_root(reply), &text, NULL);
	printf("reply: %s (%s)\n", r ? "none" : text, chan_errname(r));
	if (r == 0)
		chan_msg_free(reply);
	chan_msg_free(ok); chan_msg_free(got);
	chan_conn_free(back); chan_conn_free(reply_to); chan_conn_free(server); chan_conn_free(client);
	return r ? 1 : 0;
}
